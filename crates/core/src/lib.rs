//! calltrail-core: the domain types and pure logic of calltrail.
//!
//! Nothing here does IO or reads the clock: time is a value passed in.

pub mod domain;
pub mod engine;
pub mod phone;
pub mod rules;
pub mod setup;
pub mod sizing;
pub mod traffic;
pub mod validate;

pub use domain::{Channel, Domain, ExhaustionPolicy, NumberKind, Role, TimeZoneName};
pub use phone::{Phone, Region};
pub use validate::{FieldError, Invalid};

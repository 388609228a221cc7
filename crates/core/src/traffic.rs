//! Where a visit came from (channel, source, campaign, keyword) and what it ran on
//! (device, browser, OS, bot or not).

//! Telephony connections (where a provider's webhooks go) and agents (who answers).

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use utoipa::ToSchema;

use crate::{from_ms, new_id, Result, Store, StoreError};

/// A site's connection to a telephony provider.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Connection {
    pub id: String,
    #[serde(skip)]
    pub account_id: String,
    pub site_id: String,
    /// generic | twilio | zadarma | asterisk_ami
    pub provider: String,
    /// The secret part of the webhook URL.
    #[serde(skip)]
    pub hook_key: String,
    /// The signing secret or API secret; never shown back.
    #[serde(skip)]
    pub secret: Option<String>,
    /// Provider-specific settings (e.g. AMI host, port and user).
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
}

/// An extension or phone that answers calls, and the person behind it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub site_id: String,
    /// Extension (`101`) or phone number as the telephony reports it.
    pub ext: String,
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
}

const CONN_COLS: &str = "id, account_id, site_id, provider, hook_key, secret, settings, created_at";

fn conn_row(r: &AnyRow) -> Result<Connection> {
    Ok(Connection {
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        site_id: r.try_get("site_id")?,
        provider: r.try_get("provider")?,
        hook_key: r.try_get("hook_key")?,
        secret: r.try_get("secret")?,
        settings: serde_json::from_str(&r.try_get::<String, _>("settings")?).unwrap_or_default(),
        created_at: from_ms(r.try_get("created_at")?),
    })
}

fn agent_row(r: &AnyRow) -> Result<Agent> {
    Ok(Agent {
        id: r.try_get("id")?,
        site_id: r.try_get("site_id")?,
        ext: r.try_get("ext")?,
        name: r.try_get("name")?,
        created_at: from_ms(r.try_get("created_at")?),
    })
}

impl Store {
    pub async fn create_connection(
        &self,
        account_id: &str,
        site_id: &str,
        provider: &str,
        secret: Option<&str>,
        settings: &serde_json::Value,
    ) -> Result<Connection> {
        self.get_site(account_id, site_id).await?;
        let id = new_id();
        let key = crate::setup::random_token(20);
        let now = crate::now().as_millisecond();
        let guard = self.write_guard().await;
        sqlx::query(&format!("INSERT INTO telephony_connections ({CONN_COLS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
            .bind(&id)
            .bind(account_id)
            .bind(site_id)
            .bind(provider)
            .bind(&key)
            .bind(secret.map(str::to_owned))
            .bind(settings.to_string())
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
        drop(guard);
        self.get_connection(account_id, &id).await
    }

    pub async fn get_connection(&self, account_id: &str, id: &str) -> Result<Connection> {
        let r = sqlx::query(&format!(
            "SELECT {CONN_COLS} FROM telephony_connections WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("telephony connection"))?;
        conn_row(&r)
    }

    /// The connection a webhook URL names (the key is the scope).
    pub async fn connection_by_key(&self, key: &str) -> Result<Option<Connection>> {
        let r = sqlx::query(&format!(
            "SELECT {CONN_COLS} FROM telephony_connections WHERE hook_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(conn_row).transpose()
    }

    pub async fn list_connections(
        &self,
        account_id: &str,
        site_id: &str,
    ) -> Result<Vec<Connection>> {
        self.get_site(account_id, site_id).await?;
        let rows = sqlx::query(&format!("SELECT {CONN_COLS} FROM telephony_connections WHERE account_id = $1 AND site_id = $2 ORDER BY id"))
            .bind(account_id)
            .bind(site_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(conn_row).collect()
    }

    /// Every connection of a provider (for clients calltrail runs itself, like AMI).
    pub async fn connections_of(&self, provider: &str) -> Result<Vec<Connection>> {
        let rows = sqlx::query(&format!(
            "SELECT {CONN_COLS} FROM telephony_connections WHERE provider = $1 ORDER BY id"
        ))
        .bind(provider)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(conn_row).collect()
    }

    pub async fn delete_connection(&self, account_id: &str, id: &str) -> Result<()> {
        let _guard = self.write_guard().await;
        let n = sqlx::query("DELETE FROM telephony_connections WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("telephony connection"));
        }
        Ok(())
    }

    pub async fn create_agent(
        &self,
        account_id: &str,
        site_id: &str,
        ext: &str,
        name: &str,
    ) -> Result<Agent> {
        self.get_site(account_id, site_id).await?;
        let ext = calltrail_core::validate::name(ext, 64).map_err(|e| e.under("ext"))?;
        let name = calltrail_core::validate::name(name, 200).map_err(|e| e.under("name"))?;
        let id = new_id();
        let now = crate::now().as_millisecond();
        let guard = self.write_guard().await;
        sqlx::query("INSERT INTO agents (id, account_id, site_id, ext, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&id)
            .bind(account_id)
            .bind(site_id)
            .bind(&ext)
            .bind(&name)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(format!("the site already has an agent with extension `{ext}`")),
                _ => e.into(),
            })?;
        drop(guard);
        let r = sqlx::query("SELECT id, site_id, ext, name, created_at FROM agents WHERE id = $1")
            .bind(&id)
            .fetch_one(&self.pool)
            .await?;
        agent_row(&r)
    }

    pub async fn list_agents(&self, account_id: &str, site_id: &str) -> Result<Vec<Agent>> {
        self.get_site(account_id, site_id).await?;
        let rows = sqlx::query("SELECT id, site_id, ext, name, created_at FROM agents WHERE account_id = $1 AND site_id = $2 ORDER BY ext")
            .bind(account_id)
            .bind(site_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(agent_row).collect()
    }

    pub async fn delete_agent(&self, account_id: &str, id: &str) -> Result<()> {
        let _guard = self.write_guard().await;
        let n = sqlx::query("DELETE FROM agents WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("agent"));
        }
        Ok(())
    }
}

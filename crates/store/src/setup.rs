//! Accounts, API tokens and the setup resources (sites, pools, sources, numbers).
//! Every read and write of a resource is scoped to its account.

use calltrail_core::setup::{NumberSpec, PoolSpec, SiteSpec, SourceSpec};
use calltrail_core::{Invalid, NumberKind};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{
    from_ms, ms, new_id, Account, ApiToken, Backend, Page, Pool, Result, RuleRecord, Site, Source,
    Store, StoreError, TrackingNumber,
};

/// Longest page a list returns.
pub const MAX_PAGE: u32 = 500;

/// A random URL-safe token of `bytes` random bytes (hex).
pub fn random_token(bytes: usize) -> String {
    random_hex(bytes)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// SHA-256 of an API token; tokens are random and long, so a fast hash is enough.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn site_row(r: &AnyRow) -> Result<Site> {
    Ok(Site {
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        name: r.try_get("name")?,
        domains: parse_list(&r.try_get::<String, _>("domains")?),
        timezone: r.try_get("timezone")?,
        default_region: r.try_get("default_region")?,
        site_numbers: parse_list(&r.try_get::<String, _>("site_numbers")?),
        forward_to: r.try_get("forward_to")?,
        repeat_window_days: r.try_get("repeat_window_days")?,
        public_key: r.try_get("public_key")?,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

fn pool_row(r: &AnyRow) -> Result<Pool> {
    Ok(Pool {
        id: r.try_get("id")?,
        site_id: r.try_get("site_id")?,
        name: r.try_get("name")?,
        hold_minutes: r.try_get("hold_minutes")?,
        on_exhaustion: r.try_get("on_exhaustion")?,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

fn source_row(r: &AnyRow) -> Result<Source> {
    Ok(Source {
        id: r.try_get("id")?,
        site_id: r.try_get("site_id")?,
        name: r.try_get("name")?,
        channel: r.try_get("channel")?,
        description: r.try_get("description")?,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

fn number_row(r: &AnyRow) -> Result<TrackingNumber> {
    Ok(TrackingNumber {
        id: r.try_get("id")?,
        site_id: r.try_get("site_id")?,
        display: crate::displayed(&r.try_get::<String, _>("number")?, r.try_get("display")?),
        number: r.try_get("number")?,
        kind: r.try_get("kind")?,
        pool_id: r.try_get("pool_id")?,
        source: r.try_get("source")?,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

const SITE_INSERT: &str = "id, account_id, name, domains, timezone, default_region, site_numbers, \
                         forward_to, public_key, created_at, updated_at";
const SITE_COLS: &str = "id, account_id, name, domains, timezone, default_region, site_numbers, \
                         forward_to, public_key, created_at, updated_at, repeat_window_days";
const POOL_COLS: &str = "id, site_id, name, hold_minutes, on_exhaustion, created_at, updated_at";
const SOURCE_COLS: &str = "id, site_id, name, channel, description, created_at, updated_at";
const RULE_COLS: &str =
    "id, site_id, priority, match_json, pool_id, number_id, swap, created_at, updated_at";
const NUMBER_COLS: &str =
    "id, site_id, number, display, kind, pool_id, source, created_at, updated_at";

/// A table the store lists, gets and deletes in one shape of query.
trait Resource: Sized {
    const TABLE: &'static str;
    const COLS: &'static str;
    const WHAT: &'static str;
    fn from_row(r: &AnyRow) -> Result<Self>;
    fn id(&self) -> &str;
}

macro_rules! resource {
    ($t:ty, $table:literal, $cols:expr, $what:literal, $map:ident) => {
        impl Resource for $t {
            const TABLE: &'static str = $table;
            const COLS: &'static str = $cols;
            const WHAT: &'static str = $what;
            fn from_row(r: &AnyRow) -> Result<Self> {
                $map(r)
            }
            fn id(&self) -> &str {
                &self.id
            }
        }
    };
}

fn rule_row(r: &AnyRow) -> Result<RuleRecord> {
    Ok(RuleRecord {
        id: r.try_get("id")?,
        site_id: r.try_get("site_id")?,
        priority: r.try_get("priority")?,
        r#match: serde_json::from_str(&r.try_get::<String, _>("match_json")?).unwrap_or_default(),
        pool_id: r.try_get("pool_id")?,
        number_id: r.try_get("number_id")?,
        swap: r.try_get::<i64, _>("swap")? != 0,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

resource!(RuleRecord, "rules", RULE_COLS, "rule", rule_row);
resource!(Site, "sites", SITE_COLS, "site", site_row);
resource!(Pool, "pools", POOL_COLS, "pool", pool_row);
resource!(Source, "sources", SOURCE_COLS, "source", source_row);
resource!(
    TrackingNumber,
    "tracking_numbers",
    NUMBER_COLS,
    "tracking number",
    number_row
);

impl Store {
    // ----- accounts and tokens -----

    pub async fn create_account(&self, name: &str) -> Result<Account> {
        let name = calltrail_core::validate::name(name, 200).map_err(|e| e.under("name"))?;
        let acc = Account {
            id: new_id(),
            name,
            created_at: crate::now(),
        };
        let _guard = self.write_guard().await;
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&acc.id)
            .bind(&acc.name)
            .bind(ms(acc.created_at))
            .execute(&self.pool)
            .await?;
        Ok(acc)
    }

    pub async fn get_account(&self, id: &str) -> Result<Account> {
        let r = sqlx::query("SELECT id, name, created_at FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("account"))?;
        Ok(Account {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            created_at: from_ms(r.try_get("created_at")?),
        })
    }

    /// A new API token for the account; the plain token is returned once and stored hashed.
    pub async fn create_token(&self, account_id: &str, name: &str) -> Result<(ApiToken, String)> {
        self.get_account(account_id).await?;
        let plain = format!("ctt_{}", random_hex(24));
        let tok = ApiToken {
            id: new_id(),
            account_id: account_id.to_owned(),
            name: calltrail_core::validate::name(name, 200).map_err(|e| e.under("name"))?,
            created_at: crate::now(),
        };
        let _guard = self.write_guard().await;
        sqlx::query(
            "INSERT INTO api_tokens (id, account_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&tok.id)
        .bind(&tok.account_id)
        .bind(&tok.name)
        .bind(token_hash(&plain))
        .bind(ms(tok.created_at))
        .execute(&self.pool)
        .await?;
        Ok((tok, plain))
    }

    /// The account an API token belongs to, if the token is known and not revoked.
    pub async fn authenticate_token(&self, plain: &str) -> Result<Option<String>> {
        let r = sqlx::query(
            "SELECT account_id FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash(plain))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match r {
            Some(r) => Some(r.try_get("account_id")?),
            None => None,
        })
    }

    pub async fn revoke_token(&self, account_id: &str, token_id: &str) -> Result<()> {
        let _guard = self.write_guard().await;
        let n = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE account_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(ms(crate::now()))
            .bind(account_id)
            .bind(token_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("token"));
        }
        Ok(())
    }

    // ----- sites -----

    pub async fn create_site(&self, account_id: &str, spec: &SiteSpec) -> Result<Site> {
        let now = crate::now();
        let site = Site {
            id: new_id(),
            account_id: account_id.to_owned(),
            name: spec.name.clone(),
            domains: spec.domains.iter().map(|d| d.as_str().to_owned()).collect(),
            timezone: spec.timezone.as_str().to_owned(),
            default_region: spec.default_region.as_str().to_owned(),
            site_numbers: spec
                .site_numbers
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            forward_to: spec.forward_to.as_ref().map(|p| p.as_str().to_owned()),
            repeat_window_days: 90,
            public_key: format!("ctk_{}", random_hex(12)),
            created_at: now,
            updated_at: now,
        };
        let _guard = self.write_guard().await;
        sqlx::query(&format!(
            "INSERT INTO sites ({SITE_INSERT}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&site.id)
        .bind(&site.account_id)
        .bind(&site.name)
        .bind(json_list(&site.domains))
        .bind(&site.timezone)
        .bind(&site.default_region)
        .bind(json_list(&site.site_numbers))
        .bind(site.forward_to.clone())
        .bind(&site.public_key)
        .bind(ms(now))
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(site)
    }

    pub async fn get_site(&self, account_id: &str, site_id: &str) -> Result<Site> {
        let r = sqlx::query(&format!(
            "SELECT {SITE_COLS} FROM sites WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(site_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("site"))?;
        site_row(&r)
    }

    /// How many days back a caller counts as a repeat caller of the site (1-3650).
    pub async fn set_repeat_window(
        &self,
        account_id: &str,
        site_id: &str,
        days: i64,
    ) -> Result<Site> {
        if !(1..=3650).contains(&days) {
            return Err(Invalid::field("repeat_window_days", "1-3650 days").into());
        }
        let guard = self.write_guard().await;
        let n = sqlx::query(
            "UPDATE sites SET repeat_window_days = $1 WHERE account_id = $2 AND id = $3",
        )
        .bind(days)
        .bind(account_id)
        .bind(site_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        drop(guard);
        if n == 0 {
            return Err(StoreError::NotFound("site"));
        }
        self.get_site(account_id, site_id).await
    }

    /// A site by id, whatever its account (for the operator's command line).
    pub async fn site_by_id(&self, site_id: &str) -> Result<Option<Site>> {
        let r = sqlx::query(&format!("SELECT {SITE_COLS} FROM sites WHERE id = $1"))
            .bind(site_id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(site_row).transpose()
    }

    /// The site a snippet's public key names (no account scope: the key is the scope).
    pub async fn site_by_public_key(&self, key: &str) -> Result<Option<Site>> {
        let r = sqlx::query(&format!(
            "SELECT {SITE_COLS} FROM sites WHERE public_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(site_row).transpose()
    }

    pub async fn list_sites(
        &self,
        account_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Site>> {
        let sql = format!(
            "SELECT {SITE_COLS} FROM sites WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        self.page(&sql, &[account_id], cursor, limit).await
    }

    pub async fn update_site(
        &self,
        account_id: &str,
        site_id: &str,
        spec: &SiteSpec,
    ) -> Result<Site> {
        let domains: Vec<String> = spec.domains.iter().map(|d| d.as_str().to_owned()).collect();
        let numbers: Vec<String> = spec
            .site_numbers
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        let guard = self.write_guard().await;
        let n = sqlx::query(
            "UPDATE sites SET name = $1, domains = $2, timezone = $3, default_region = $4, \
             site_numbers = $5, forward_to = $6, updated_at = $7 WHERE account_id = $8 AND id = $9",
        )
        .bind(&spec.name)
        .bind(json_list(&domains))
        .bind(spec.timezone.as_str())
        .bind(spec.default_region.as_str())
        .bind(json_list(&numbers))
        .bind(spec.forward_to.as_ref().map(|p| p.as_str().to_owned()))
        .bind(ms(crate::now()))
        .bind(account_id)
        .bind(site_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        drop(guard);
        if n == 0 {
            return Err(StoreError::NotFound("site"));
        }
        self.get_site(account_id, site_id).await
    }

    /// Delete a site with everything under it.
    pub async fn delete_site(&self, account_id: &str, site_id: &str) -> Result<()> {
        let _guard = self.write_guard().await;
        let mut tx = self.pool.begin().await?;
        let found = sqlx::query("SELECT id FROM sites WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(site_id)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Err(StoreError::NotFound("site"));
        }
        sqlx::query("DELETE FROM page_views WHERE session_id IN (SELECT id FROM sessions WHERE site_id = $1)")
            .bind(site_id)
            .execute(&mut *tx)
            .await?;
        if self.backend == Backend::Postgres {
            // SQLite has no `number_state` (migration 0012).
            sqlx::query("DELETE FROM number_state WHERE number_id IN (SELECT id FROM tracking_numbers WHERE site_id = $1)")
                .bind(site_id)
                .execute(&mut *tx)
                .await?;
        }
        // Children first: numbers reference pools.
        for table in [
            "outbox",
            "agents",
            "telephony_connections",
            "calls",
            "exhaustions",
            "leases",
            "sessions",
            "rules",
            "tracking_numbers",
            "pools",
            "sources",
            "sites",
        ] {
            let col = if table == "sites" { "id" } else { "site_id" };
            sqlx::query(&format!("DELETE FROM {table} WHERE {col} = $1"))
                .bind(site_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.forget_pools();
        Ok(())
    }

    // ----- the shared shape of a site's children -----

    async fn page<T: Resource>(
        &self,
        sql: &str,
        scope: &[&str],
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<T>> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut q = sqlx::query(sql);
        for s in scope {
            q = q.bind(*s);
        }
        let rows = q
            .bind(cursor.unwrap_or(""))
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut items = rows.iter().map(T::from_row).collect::<Result<Vec<T>>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|t| t.id().to_owned())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn list_child<T: Resource>(
        &self,
        account_id: &str,
        site_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<T>> {
        self.get_site(account_id, site_id).await?;
        let sql = format!(
            "SELECT {} FROM {} WHERE account_id = $1 AND site_id = $2 AND id > $3 ORDER BY id LIMIT $4",
            T::COLS,
            T::TABLE
        );
        self.page(&sql, &[account_id, site_id], cursor, limit).await
    }

    async fn get_child<T: Resource>(&self, account_id: &str, id: &str) -> Result<T> {
        let r = sqlx::query(&format!(
            "SELECT {} FROM {} WHERE account_id = $1 AND id = $2",
            T::COLS,
            T::TABLE
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound(T::WHAT))?;
        T::from_row(&r)
    }

    async fn delete_child<T: Resource>(&self, account_id: &str, id: &str) -> Result<()> {
        let guard = self.write_guard().await;
        let n = sqlx::query(&format!(
            "DELETE FROM {} WHERE account_id = $1 AND id = $2",
            T::TABLE
        ))
        .bind(account_id)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        drop(guard);
        if n == 0 {
            return Err(StoreError::NotFound(T::WHAT));
        }
        Ok(())
    }

    // ----- pools -----

    pub async fn create_pool(
        &self,
        account_id: &str,
        site_id: &str,
        spec: &PoolSpec,
    ) -> Result<Pool> {
        self.get_site(account_id, site_id).await?;
        let now = crate::now();
        let id = new_id();
        let guard = self.write_guard().await;
        sqlx::query(&format!(
            "INSERT INTO pools (account_id, {POOL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(account_id)
        .bind(&id)
        .bind(site_id)
        .bind(&spec.name)
        .bind(i64::from(spec.hold_minutes))
        .bind(spec.on_exhaustion.as_str())
        .bind(ms(now))
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(|e| pool_conflict(e, &spec.name))?;
        drop(guard);
        self.get_pool(account_id, &id).await
    }

    pub async fn get_pool(&self, account_id: &str, pool_id: &str) -> Result<Pool> {
        self.get_child(account_id, pool_id).await
    }

    pub async fn list_pools(
        &self,
        account_id: &str,
        site_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Pool>> {
        self.list_child(account_id, site_id, cursor, limit).await
    }

    pub async fn update_pool(
        &self,
        account_id: &str,
        pool_id: &str,
        spec: &PoolSpec,
    ) -> Result<Pool> {
        let guard = self.write_guard().await;
        let n = sqlx::query(
            "UPDATE pools SET name = $1, hold_minutes = $2, on_exhaustion = $3, updated_at = $4 \
             WHERE account_id = $5 AND id = $6",
        )
        .bind(&spec.name)
        .bind(i64::from(spec.hold_minutes))
        .bind(spec.on_exhaustion.as_str())
        .bind(ms(crate::now()))
        .bind(account_id)
        .bind(pool_id)
        .execute(&self.pool)
        .await
        .map_err(|e| pool_conflict(e, &spec.name))?
        .rows_affected();
        drop(guard);
        if n == 0 {
            return Err(StoreError::NotFound("pool"));
        }
        self.get_pool(account_id, pool_id).await
    }

    /// Delete a pool that no number belongs to any more.
    pub async fn delete_pool(&self, account_id: &str, pool_id: &str) -> Result<()> {
        self.get_pool(account_id, pool_id).await?;
        let r = sqlx::query("SELECT COUNT(*) AS n FROM tracking_numbers WHERE pool_id = $1")
            .bind(pool_id)
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = r.try_get("n")?;
        if n > 0 {
            return Err(StoreError::Conflict(format!(
                "the pool still has {n} number(s); delete or move them first"
            )));
        }
        let done = self.delete_child::<Pool>(account_id, pool_id).await;
        self.forget_pools();
        done
    }

    // ----- sources -----

    pub async fn create_source(
        &self,
        account_id: &str,
        site_id: &str,
        spec: &SourceSpec,
    ) -> Result<Source> {
        self.get_site(account_id, site_id).await?;
        let now = crate::now();
        let id = new_id();
        let guard = self.write_guard().await;
        sqlx::query(&format!(
            "INSERT INTO sources (account_id, {SOURCE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(account_id)
        .bind(&id)
        .bind(site_id)
        .bind(&spec.name)
        .bind(spec.channel.as_str())
        .bind(spec.description.clone())
        .bind(ms(now))
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(|e| source_conflict(e, &spec.name))?;
        drop(guard);
        self.get_source(account_id, &id).await
    }

    pub async fn get_source(&self, account_id: &str, id: &str) -> Result<Source> {
        self.get_child(account_id, id).await
    }

    pub async fn list_sources(
        &self,
        account_id: &str,
        site_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Source>> {
        self.list_child(account_id, site_id, cursor, limit).await
    }

    pub async fn update_source(
        &self,
        account_id: &str,
        id: &str,
        spec: &SourceSpec,
    ) -> Result<Source> {
        let guard = self.write_guard().await;
        let n = sqlx::query(
            "UPDATE sources SET name = $1, channel = $2, description = $3, updated_at = $4 \
             WHERE account_id = $5 AND id = $6",
        )
        .bind(&spec.name)
        .bind(spec.channel.as_str())
        .bind(spec.description.clone())
        .bind(ms(crate::now()))
        .bind(account_id)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| source_conflict(e, &spec.name))?
        .rows_affected();
        drop(guard);
        if n == 0 {
            return Err(StoreError::NotFound("source"));
        }
        self.get_source(account_id, id).await
    }

    pub async fn delete_source(&self, account_id: &str, id: &str) -> Result<()> {
        self.delete_child::<Source>(account_id, id).await
    }

    // ----- tracking numbers -----

    /// Check that a number's pool is in its site, and that a pool has one fallback at most.
    async fn check_number(
        &self,
        account_id: &str,
        site_id: &str,
        spec: &NumberSpec,
        except: Option<&str>,
    ) -> Result<()> {
        let Some(pool_id) = spec.pool_id.as_deref() else {
            return Ok(());
        };
        let pool = self
            .get_pool(account_id, pool_id)
            .await
            .map_err(|_| Invalid::field("pool_id", format!("no pool `{pool_id}` in this site")))?;
        if pool.site_id != site_id {
            return Err(
                Invalid::field("pool_id", format!("no pool `{pool_id}` in this site")).into(),
            );
        }
        if spec.kind == NumberKind::Fallback {
            let r = sqlx::query(
                "SELECT number FROM tracking_numbers WHERE pool_id = $1 AND kind = 'fallback' AND id <> $2",
            )
            .bind(pool_id)
            .bind(except.unwrap_or(""))
            .fetch_optional(&self.pool)
            .await?;
            if let Some(r) = r {
                let existing: String = r.try_get("number")?;
                return Err(StoreError::Conflict(format!(
                    "pool `{}` already has the fallback number {existing}",
                    pool.name
                )));
            }
        }
        Ok(())
    }

    pub async fn create_number(
        &self,
        account_id: &str,
        site_id: &str,
        spec: &NumberSpec,
    ) -> Result<TrackingNumber> {
        self.get_site(account_id, site_id).await?;
        let guard = self.write_guard().await;
        self.check_number(account_id, site_id, spec, None).await?;
        let now = crate::now();
        let id = new_id();
        sqlx::query(&format!(
            "INSERT INTO tracking_numbers (account_id, {NUMBER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(account_id)
        .bind(&id)
        .bind(site_id)
        .bind(spec.number.as_str())
        .bind(spec.number.international())
        .bind(spec.kind.as_str())
        .bind(spec.pool_id.clone())
        .bind(spec.source.clone())
        .bind(ms(now))
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(|e| number_conflict(e, spec))?;
        self.forget_pools();
        drop(guard);
        self.get_number(account_id, &id).await
    }

    pub async fn get_number(&self, account_id: &str, id: &str) -> Result<TrackingNumber> {
        self.get_child(account_id, id).await
    }

    pub async fn list_numbers(
        &self,
        account_id: &str,
        site_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<TrackingNumber>> {
        self.list_child(account_id, site_id, cursor, limit).await
    }

    pub async fn update_number(
        &self,
        account_id: &str,
        id: &str,
        spec: &NumberSpec,
    ) -> Result<TrackingNumber> {
        let current = self.get_number(account_id, id).await?;
        let guard = self.write_guard().await;
        self.check_number(account_id, &current.site_id, spec, Some(id))
            .await?;
        sqlx::query(
            "UPDATE tracking_numbers SET number = $1, kind = $2, pool_id = $3, source = $4, updated_at = $5, \
             display = $6 WHERE account_id = $7 AND id = $8",
        )
        .bind(spec.number.as_str())
        .bind(spec.kind.as_str())
        .bind(spec.pool_id.clone())
        .bind(spec.source.clone())
        .bind(ms(crate::now()))
        .bind(spec.number.international())
        .bind(account_id)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| number_conflict(e, spec))?;
        self.forget_pools();
        drop(guard);
        self.get_number(account_id, id).await
    }

    pub async fn delete_number(&self, account_id: &str, id: &str) -> Result<()> {
        let done = self.delete_child::<TrackingNumber>(account_id, id).await;
        self.forget_pools();
        done
    }
}

fn pool_conflict(e: sqlx::Error, name: &str) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict(format!("the site already has a pool named `{name}`"))
    } else {
        e.into()
    }
}

fn source_conflict(e: sqlx::Error, name: &str) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict(format!("the site already has a source named `{name}`"))
    } else {
        e.into()
    }
}

fn number_conflict(e: sqlx::Error, spec: &NumberSpec) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict(format!(
            "{} is already a tracking number (a number can serve one site only)",
            spec.number
        ))
    } else {
        e.into()
    }
}

/// A validated rule: what it matches and what it shows.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub priority: i64,
    pub matcher: calltrail_core::rules::RuleMatch,
    pub pool_id: Option<String>,
    pub number_id: Option<String>,
    pub swap: bool,
}

impl Store {
    /// Check that a rule's pool or number belongs to its site.
    async fn check_rule(&self, account_id: &str, site_id: &str, spec: &RuleSpec) -> Result<()> {
        if let Some(pid) = &spec.pool_id {
            match self.get_pool(account_id, pid).await {
                Ok(p) if p.site_id == site_id => {}
                _ => {
                    return Err(
                        Invalid::field("pool_id", format!("no pool `{pid}` in this site")).into(),
                    )
                }
            }
        }
        if let Some(nid) = &spec.number_id {
            match self.get_number(account_id, nid).await {
                Ok(n) if n.site_id == site_id && n.kind == "static" => {}
                Ok(n) if n.site_id == site_id => {
                    return Err(Invalid::field(
                        "number_id",
                        "a rule shows a static number; pool numbers are leased through their pool",
                    )
                    .into())
                }
                _ => {
                    return Err(Invalid::field(
                        "number_id",
                        format!("no number `{nid}` in this site"),
                    )
                    .into())
                }
            }
        }
        Ok(())
    }

    pub async fn create_rule(
        &self,
        account_id: &str,
        site_id: &str,
        spec: &RuleSpec,
    ) -> Result<RuleRecord> {
        self.get_site(account_id, site_id).await?;
        self.check_rule(account_id, site_id, spec).await?;
        let now = crate::now();
        let id = new_id();
        let guard = self.write_guard().await;
        sqlx::query(&format!(
            "INSERT INTO rules (account_id, {RULE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(account_id)
        .bind(&id)
        .bind(site_id)
        .bind(spec.priority)
        .bind(serde_json::to_string(&spec.matcher).unwrap_or_else(|_| "{}".into()))
        .bind(spec.pool_id.clone())
        .bind(spec.number_id.clone())
        .bind(i64::from(spec.swap))
        .bind(ms(now))
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        drop(guard);
        self.get_rule(account_id, &id).await
    }

    pub async fn get_rule(&self, account_id: &str, id: &str) -> Result<RuleRecord> {
        self.get_child(account_id, id).await
    }

    pub async fn list_rules(
        &self,
        account_id: &str,
        site_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<RuleRecord>> {
        self.list_child(account_id, site_id, cursor, limit).await
    }

    /// Every rule of a site, in the order they apply (for the engine).
    pub async fn site_rules(&self, site_id: &str) -> Result<Vec<RuleRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {RULE_COLS} FROM rules WHERE site_id = $1 ORDER BY priority, id"
        ))
        .bind(site_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rule_row).collect()
    }

    pub async fn update_rule(
        &self,
        account_id: &str,
        id: &str,
        spec: &RuleSpec,
    ) -> Result<RuleRecord> {
        let cur = self.get_rule(account_id, id).await?;
        self.check_rule(account_id, &cur.site_id, spec).await?;
        let guard = self.write_guard().await;
        sqlx::query(
            "UPDATE rules SET priority = $1, match_json = $2, pool_id = $3, number_id = $4, swap = $5, updated_at = $6 \
             WHERE account_id = $7 AND id = $8",
        )
        .bind(spec.priority)
        .bind(serde_json::to_string(&spec.matcher).unwrap_or_else(|_| "{}".into()))
        .bind(spec.pool_id.clone())
        .bind(spec.number_id.clone())
        .bind(i64::from(spec.swap))
        .bind(ms(crate::now()))
        .bind(account_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        drop(guard);
        self.get_rule(account_id, id).await
    }

    pub async fn delete_rule(&self, account_id: &str, id: &str) -> Result<()> {
        self.delete_child::<RuleRecord>(account_id, id).await
    }

    /// Every pool and number of a site (for the engine's site context).
    pub async fn site_pools(&self, site_id: &str) -> Result<Vec<Pool>> {
        let rows = sqlx::query(&format!(
            "SELECT {POOL_COLS} FROM pools WHERE site_id = $1 ORDER BY id"
        ))
        .bind(site_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pool_row).collect()
    }

    pub async fn site_numbers(&self, site_id: &str) -> Result<Vec<TrackingNumber>> {
        self.site_numbers_where(site_id, "").await
    }

    /// The site's numbers other than its pools' own (statics and fallbacks): what a site's
    /// engine context needs. A pool may hold thousands of numbers; allocation reads those.
    pub(crate) async fn site_numbers_not_pooled(
        &self,
        site_id: &str,
    ) -> Result<Vec<TrackingNumber>> {
        self.site_numbers_where(site_id, " AND kind <> 'pool'")
            .await
    }

    /// The site's numbers, in id order, narrowed by `and` (SQL text of ours, no input).
    async fn site_numbers_where(&self, site_id: &str, and: &str) -> Result<Vec<TrackingNumber>> {
        let rows = sqlx::query(&format!(
            "SELECT {NUMBER_COLS} FROM tracking_numbers WHERE site_id = $1{and} ORDER BY id"
        ))
        .bind(site_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(number_row).collect()
    }
}

impl Store {
    /// The first account with this exact name (for the demo's idempotent setup).
    pub async fn account_by_name(&self, name: &str) -> Result<Option<Account>> {
        let r = sqlx::query(
            "SELECT id, name, created_at FROM accounts WHERE name = $1 ORDER BY id LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            Ok(Account {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                created_at: from_ms(r.try_get("created_at")?),
            })
        })
        .transpose()
    }
}

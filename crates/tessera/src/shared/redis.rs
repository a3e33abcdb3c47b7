//! The Redis implementation of the ephemeral state (redis-rs with its reconnecting, multiplexed
//! connection manager). Every read-modify-write is one Lua script, so it is atomic across
//! replicas; invalidations travel on one pub/sub channel.
//!
//! Keys, under the configured prefix: `rl:<bucket>` (token bucket: hash `t`, `at`),
//! `lk:<counter>` (lockout: hash `count`, `until`), `lp:<counter>` (reservations in flight:
//! sorted set scored by expiry), `kd:<pair>` (known device); channel `invalidate`.
//!
//! On the channel: `i:<nonce>:<change>` (an invalidation), `a:<nonce>` (a replica has applied
//! it) and `p:` (a heartbeat). A publisher waits for one `a:` from each replica the `PUBLISH`
//! reached, so a revocation is in force everywhere before the request that made it answers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Backoff, Held, Limit, RESERVATION_SECS, Refusal};

/// How long one Redis command may take before it counts as a failure.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Replicas publish a heartbeat this often; a subscription that hears nothing (not even its
/// own heartbeat) for [`SILENCE`] is treated as lost.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
pub const SILENCE: Duration = Duration::from_secs(16);
const HEARTBEAT_MESSAGE: &str = "p:";
/// The longest a publisher waits for every subscribed replica to confirm an invalidation. A
/// replica that has not confirmed by then is hung or cut off; it notices the silence of its
/// subscription within [`SILENCE`] and then stops trusting its caches.
pub const ACK_WAIT: Duration = Duration::from_millis(500);

const TAKE: &str = r"
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2]) / 60
local now = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then tokens = burst; at = now end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
elseif rate > 0 then
  wait = math.max(1, math.ceil((1 - tokens) / rate))
else
  wait = 3600
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', tostring(at))
local ttl = 3600
if rate > 0 then ttl = math.ceil(burst / rate) + 60 end
redis.call('EXPIRE', KEYS[1], ttl)
return wait
";

const RESERVE: &str = r"
local threshold = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local locked = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if locked > now then return locked - now end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
local room = math.max(threshold - count, 1)
if redis.call('ZCARD', KEYS[2]) >= room then return -1 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]) + 5)
return 0
";

const FAIL: &str = r"
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
local threshold = tonumber(ARGV[1])
local secs = 0
if count >= threshold then
  local doublings = math.min(count - threshold, 20)
  secs = math.min(tonumber(ARGV[2]) * (2 ^ doublings), tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], 'until', string.format('%d', tonumber(ARGV[4]) + secs))
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return secs
";

/// What the subscription hands to its caller.
pub enum Message<'a> {
    /// The subscription is (again) in place.
    Subscribed,
    Payload(&'a str),
}

pub struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    channel: String,
    healthy: AtomicBool,
    /// This replica's invalidations awaiting confirmations: nonce → how many arrived.
    pending: Mutex<HashMap<String, tokio::sync::watch::Sender<i64>>>,
    /// Whether the last invalidation was confirmed in time (logs a run of late ones once).
    confirmed: AtomicBool,
    take: redis::Script,
    reserve: redis::Script,
    fail: redis::Script,
}

impl Redis {
    pub async fn connect(
        url: &str,
        prefix: &str,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let shown = crate::config::redact_url(url);
        let client = match ca_file {
            None => redis::Client::open(url),
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!(
                        "TESSERA_REDIS_CA_FILE ({}) cannot be read: {e}",
                        path.display()
                    )
                })?;
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root_cert),
                    },
                )
            }
        }
        .map_err(|e| anyhow::anyhow!("TESSERA_REDIS_URL ({shown}) is not usable: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach Redis at {shown} ({e}); start it (redis-server) or unset \
                     TESSERA_REDIS_URL to keep the state in-process"
                )
            })?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.to_string(),
            channel: format!("{prefix}invalidate"),
            healthy: AtomicBool::new(true),
            pending: Mutex::default(),
            confirmed: AtomicBool::new(true),
            take: redis::Script::new(TAKE),
            reserve: redis::Script::new(RESERVE),
            fail: redis::Script::new(FAIL),
        })
    }

    fn key(&self, family: &str, key: &str) -> String {
        format!("{}{family}:{key}", self.prefix)
    }

    /// Logs the first failure of a run and the recovery after it, not every failed command.
    fn note<T>(&self, result: redis::RedisResult<T>, what: &str) -> Result<T, ()> {
        match result {
            Ok(v) => {
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("Redis is reachable again");
                }
                Ok(v)
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, what, "Redis is unreachable: rate limits fall back to \
                        in-process buckets, password checks are refused, caches are bypassed");
                }
                Err(())
            }
        }
    }

    pub async fn take(&self, key: &str, limit: Limit, now: i64) -> Result<Result<(), u64>, ()> {
        let wait: redis::RedisResult<i64> = self
            .take
            .key(self.key("rl", key))
            .arg(limit.burst)
            .arg(limit.per_minute)
            .arg(now)
            .invoke_async(&mut self.conn.clone())
            .await;
        let wait = self.note(wait, "rate limit")?;
        Ok(if wait <= 0 { Ok(()) } else { Err(wait as u64) })
    }

    pub async fn reserve(
        &self,
        key: &str,
        threshold: u32,
        now: i64,
    ) -> Result<Result<Held, Refusal>, ()> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let answer: redis::RedisResult<i64> = self
            .reserve
            .key(self.key("lk", key))
            .key(self.key("lp", key))
            .arg(threshold)
            .arg(now)
            .arg(&id)
            .arg(RESERVATION_SECS)
            .invoke_async(&mut self.conn.clone())
            .await;
        Ok(match self.note(answer, "lockout reservation")? {
            0 => Ok(Held::new(key, id)),
            n if n < 0 => Err(Refusal::Busy),
            n => Err(Refusal::Locked {
                retry_after: n as u64,
            }),
        })
    }

    /// Removes the reservation in the background (it also expires by itself).
    pub fn release(&self, held: Held) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut conn = self.conn.clone();
        let key = self.key("lp", &held.key);
        runtime.spawn(async move {
            let _: redis::RedisResult<i64> = redis::cmd("ZREM")
                .arg(key)
                .arg(held.id)
                .query_async(&mut conn)
                .await;
        });
    }

    pub async fn fail(
        &self,
        key: &str,
        threshold: u32,
        backoff: Backoff,
        now: i64,
    ) -> Result<Option<u64>, ()> {
        let secs: redis::RedisResult<i64> = self
            .fail
            .key(self.key("lk", key))
            .arg(threshold)
            .arg(backoff.base_secs)
            .arg(backoff.max_secs)
            .arg(now)
            .arg(super::FAILURE_MEMORY_SECS)
            .invoke_async(&mut self.conn.clone())
            .await;
        let secs = self.note(secs, "lockout failure")?;
        Ok((secs > 0).then_some(secs as u64))
    }

    pub async fn clear(&self, key: &str) {
        let done: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(self.key("lk", key))
            .query_async(&mut self.conn.clone())
            .await;
        let _ = self.note(done, "lockout reset");
    }

    pub async fn mark_known(&self, key: &str) {
        let done: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.key("kd", key))
            .arg(1)
            .arg("EX")
            .arg(super::KNOWN_DEVICE_SECS)
            .query_async(&mut self.conn.clone())
            .await;
        let _ = self.note(done, "known device");
    }

    pub async fn is_known(&self, key: &str) -> bool {
        let known: redis::RedisResult<bool> = redis::cmd("EXISTS")
            .arg(self.key("kd", key))
            .query_async(&mut self.conn.clone())
            .await;
        self.note(known, "known device").unwrap_or(false)
    }

    pub async fn stash(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<(), ()> {
        let done: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.key("st", key))
            .arg(value)
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async(&mut self.conn.clone())
            .await;
        self.note(done, "stash")
    }

    /// `GETDEL` (Redis 6.2): read and removed atomically.
    pub async fn take_stashed(&self, key: &str) -> Result<Option<Vec<u8>>, ()> {
        let value: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GETDEL")
            .arg(self.key("st", key))
            .query_async(&mut self.conn.clone())
            .await;
        self.note(value, "stash")
    }

    /// Publishes invalidation `change` and waits (at most [`ACK_WAIT`]) until every replica the
    /// message reached, this one included, has applied it.
    pub async fn publish(&self, change: &str) {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let (tx, mut confirmations) = tokio::sync::watch::channel(0);
        self.pending_acks().insert(nonce.clone(), tx);
        let sent = send(&self.conn, &self.channel, format!("i:{nonce}:{change}")).await;
        if let Ok(reached) = self.note(sent, "invalidation") {
            let confirmed =
                tokio::time::timeout(ACK_WAIT, confirmations.wait_for(|&heard| heard >= reached))
                    .await
                    .is_ok();
            if self.confirmed.swap(confirmed, Ordering::AcqRel) != confirmed {
                if confirmed {
                    tracing::info!("every replica confirms invalidations again");
                } else {
                    tracing::warn!(
                        wait_ms = ACK_WAIT.as_millis() as u64,
                        "a replica did not confirm an invalidation in time; it stops trusting \
                         its caches once its subscription is seen silent"
                    );
                }
            }
        }
        self.pending_acks().remove(&nonce);
    }

    fn pending_acks(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::watch::Sender<i64>>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one replica's confirmation of invalidation `nonce`, if it is this replica's.
    fn confirmation(&self, nonce: &str) {
        if let Some(tx) = self.pending_acks().get(nonce) {
            tx.send_modify(|heard| *heard += 1);
        }
    }

    /// Subscribes to the invalidation channel and hands each message to `on` until the
    /// subscription is lost (an error, or silence longer than [`SILENCE`] although every
    /// replica publishes a heartbeat each [`HEARTBEAT`]).
    pub async fn subscribe(&self, on: &mut (dyn FnMut(Message<'_>) + Send)) {
        let mut pubsub = match self.client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                let _ = self.note::<()>(Err(e), "invalidation subscription");
                return;
            }
        };
        if let Err(e) = pubsub.subscribe(&self.channel).await {
            let _ = self.note::<()>(Err(e), "invalidation subscription");
            return;
        }
        on(Message::Subscribed);
        let mut stream = pubsub.on_message();
        let mut beat = tokio::time::interval(HEARTBEAT);
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    if heard.elapsed() > SILENCE {
                        tracing::warn!("the Redis invalidation subscription went silent; resubscribing");
                        return;
                    }
                    let beat = send(&self.conn, &self.channel, HEARTBEAT_MESSAGE.into()).await;
                    let _ = self.note(beat, "invalidation heartbeat");
                }
                next = stream.next() => {
                    let Some(message) = next else {
                        tracing::warn!("the Redis invalidation subscription was lost; resubscribing");
                        return;
                    };
                    heard = tokio::time::Instant::now();
                    let Ok(text) = message.get_payload::<String>() else {
                        continue;
                    };
                    if let Some(nonce) = text.strip_prefix("a:") {
                        self.confirmation(nonce);
                    } else if let Some((nonce, change)) =
                        text.strip_prefix("i:").and_then(|rest| rest.split_once(':'))
                    {
                        on(Message::Payload(change));
                        // Confirmed off this loop, so a slow Redis never delays the next message.
                        let (conn, channel, ack) =
                            (self.conn.clone(), self.channel.clone(), format!("a:{nonce}"));
                        tokio::spawn(async move { send(&conn, &channel, ack).await });
                    } else if text != HEARTBEAT_MESSAGE {
                        on(Message::Payload(&text));
                    }
                }
            }
        }
    }
}

/// `PUBLISH channel text`: how many subscribers it reached.
async fn send(conn: &ConnectionManager, channel: &str, text: String) -> redis::RedisResult<i64> {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(text)
        .query_async(&mut conn.clone())
        .await
}

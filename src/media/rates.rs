//! Request rates: token buckets per user and per client address for
//! uploads, downloads, thumbnail generation and remote fetches. Users of a
//! class that is not rate limited (bridges, bots) pass freely. The bucket
//! table is bounded (least recently used buckets go first), so no number
//! of users or addresses grows it without end; a forgotten bucket comes
//! back full, which only ever errs towards letting a request through.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{OwnedUserId, UserId};

use super::{MediaError, MediaService, ports::Token};
use crate::config::{Rate, RateLimitConfig};

/// What a request spends a token of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Uploads,
    Downloads,
    Thumbnails,
    RemoteFetches,
    /// URL previews asked for (cached ones too).
    Previews,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Self::Uploads => "uploads",
            Self::Downloads => "downloads",
            Self::Thumbnails => "thumbnails",
            Self::RemoteFetches => "remote_fetches",
            Self::Previews => "previews",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Who {
    User(OwnedUserId),
    Address(IpAddr),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let refill = now.duration_since(self.at).as_secs_f64() * rate.per_second;
        self.tokens = (self.tokens + refill).min(f64::from(rate.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.per_second,
            ))
        }
    }
}

pub(super) struct RateLimiter {
    config: RateLimitConfig,
    buckets: moka::sync::Cache<(Family, Who), Arc<Mutex<Bucket>>>,
}

impl RateLimiter {
    pub(super) fn new(config: &RateLimitConfig) -> Self {
        Self {
            config: config.clone(),
            buckets: moka::sync::Cache::builder()
                .max_capacity(config.max_tracked)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    fn rate(&self, family: Family) -> Option<Rate> {
        match family {
            Family::Uploads => self.config.uploads,
            Family::Downloads => self.config.downloads,
            Family::Thumbnails => self.config.thumbnails,
            Family::RemoteFetches => self.config.remote_fetches,
            Family::Previews => self.config.previews,
        }
    }

    fn take(&self, family: Family, who: Who, rate: Rate) -> Result<(), Duration> {
        let bucket = self.buckets.get_with((family, who), || {
            Arc::new(Mutex::new(Bucket {
                tokens: f64::from(rate.burst),
                at: Instant::now(),
            }))
        });
        let mut bucket = bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        bucket.take(rate, Instant::now())
    }
}

impl MediaService {
    /// Spends a token of `family` for `user` and for `client`; refuses with
    /// the time until the emptier bucket has one again. Instances sharing a
    /// metadata store share the buckets (so the limit holds across them);
    /// alone, the buckets live in memory here.
    pub(super) async fn rate_check(
        &self,
        family: Family,
        user: Option<&UserId>,
        client: Option<IpAddr>,
    ) -> Result<(), MediaError> {
        let limiter = &self.inner.rates;
        let Some(rate) = limiter.rate(family) else {
            return Ok(());
        };
        let class = user.map(|u| self.user_class(u));
        if class.is_some_and(|c| !c.rate_limited) {
            return Ok(());
        }
        let by_user = user.map(|u| (class.map_or("default", |c| c.name), Who::User(u.to_owned())));
        let by_address = client.map(|a| ("address", Who::Address(a)));
        for (label, who) in by_user.into_iter().chain(by_address) {
            let bucket = match &who {
                Who::User(user) => format!("{}/user/{user}", family.name()),
                Who::Address(address) => format!("{}/address/{address}", family.name()),
            };
            let token = self
                .inner
                .meta
                .housekeeping
                .spend_token(&bucket, (rate.per_second, rate.burst))
                .await?;
            let outcome = match token {
                Token::Granted => Ok(()),
                Token::Wait(wait) => Err(wait),
                Token::Unshared => limiter.take(family, who, rate),
            };
            if let Err(wait) = outcome {
                self.inner.metrics.rate_limited(label, family.name());
                return Err(MediaError::RateLimited {
                    retry_after: wait.max(Duration::from_millis(1)),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many addresses come, the table holds at most `max_tracked`.
    #[test]
    fn the_bucket_table_is_bounded() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            downloads: Some(Rate {
                per_second: 1.0,
                burst: 1,
            }),
            max_tracked: 100,
            ..RateLimitConfig::default()
        });
        let rate = limiter.rate(Family::Downloads).unwrap();
        for i in 0..20_000u32 {
            let address = IpAddr::from(i.to_be_bytes());
            assert!(
                limiter
                    .take(Family::Downloads, Who::Address(address), rate)
                    .is_ok()
            );
        }
        limiter.buckets.run_pending_tasks();
        assert!(
            limiter.buckets.entry_count() <= 100,
            "{}",
            limiter.buckets.entry_count()
        );
    }

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3,
        };
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: 3.0,
            at: start,
        };
        for _ in 0..3 {
            assert!(bucket.take(rate, start).is_ok());
        }
        let wait = bucket.take(rate, start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(
            bucket
                .take(rate, start + Duration::from_millis(500))
                .is_ok()
        );
        assert!(
            bucket
                .take(rate, start + Duration::from_millis(500))
                .is_err()
        );
        // Never more than the burst, however long it rested.
        let later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(bucket.take(rate, later).is_ok());
        }
        assert!(bucket.take(rate, later).is_err());
    }
}

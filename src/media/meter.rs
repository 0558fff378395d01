//! The meter every incoming body passes through: counts and hashes the
//! bytes, and stops the stream past the size limit, when the sender stalls,
//! trickles below the minimum rate, or runs past the deadline, so every
//! limit holds while the bytes arrive.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, stream};

use super::MediaError;
use crate::{
    ids::Sha256Digest,
    storage::{ByteStream, StorageError, digest::ContentHasher},
};

/// Why a metered body stopped early.
#[derive(Debug, Clone, Copy)]
enum Stop {
    TooLarge,
    /// Nothing arrived for the idle timeout.
    Stalled,
    /// Less than the minimum rate arrived over a whole window.
    TooSlow,
    /// The whole body took longer than the deadline.
    Deadline,
}

/// How long a body may take, and how slowly it may arrive.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Largest body.
    pub limit: u64,
    /// Longest gap between two chunks.
    pub idle: Duration,
    /// Bytes per second every `RATE_WINDOW` must bring; 0 turns it off.
    pub min_rate: u64,
    /// Longest the whole body may take.
    pub deadline: Duration,
}

/// The minimum rate is judged over windows this long, so short stalls (a
/// phone changing networks) pass while a trickle does not.
const RATE_WINDOW: Duration = Duration::from_secs(30);

#[derive(Default)]
struct MeterState {
    hasher: ContentHasher,
    stop: Option<Stop>,
}

/// Counts and hashes bytes as they pass, and fails the stream past the size
/// limit, when the client stalls, trickles below the minimum rate or runs
/// past the deadline, so every limit holds while bytes arrive.
pub(super) struct Meter(Arc<Mutex<MeterState>>);

struct Clock {
    deadline: tokio::time::Instant,
    window_end: tokio::time::Instant,
    window_start_bytes: u64,
}

impl Meter {
    pub(super) fn wrap(body: ByteStream, pace: Pace) -> (ByteStream, Self) {
        let state = Arc::new(Mutex::new(MeterState::default()));
        let shared = Arc::clone(&state);
        let now = tokio::time::Instant::now();
        let clock = Clock {
            deadline: now + pace.deadline,
            window_end: now + RATE_WINDOW,
            window_start_bytes: 0,
        };
        let metered = stream::unfold(
            (body, shared, clock, false),
            move |(mut body, state, mut clock, done)| async move {
                if done {
                    return None;
                }
                let fail = |stop: Stop, state: &Arc<Mutex<MeterState>>| {
                    lock(state).stop = Some(stop);
                    std::io::Error::other(match stop {
                        Stop::TooLarge => "upload too large",
                        Stop::Stalled => "upload stalled",
                        Stop::TooSlow => "upload too slow",
                        Stop::Deadline => "upload took too long",
                    })
                };
                let idle_end = tokio::time::Instant::now() + pace.idle;
                let next = loop {
                    let wake = idle_end.min(clock.deadline).min(clock.window_end);
                    if let Ok(next) = tokio::time::timeout_at(wake, body.next()).await {
                        break next;
                    }
                    let now = tokio::time::Instant::now();
                    let stop = if now >= clock.deadline {
                        Some(Stop::Deadline)
                    } else if now >= idle_end {
                        Some(Stop::Stalled)
                    } else {
                        clock.end_window(lock(&state).hasher.size(), pace.min_rate)
                    };
                    if let Some(stop) = stop {
                        return Some((Err(fail(stop, &state)), (body, state, clock, true)));
                    }
                };
                match next {
                    None => None,
                    Some(Err(e)) => Some((Err(e), (body, state, clock, true))),
                    Some(Ok(chunk)) => {
                        let mut guard = lock(&state);
                        let bytes = guard.hasher.size() + chunk.len() as u64;
                        if bytes > pace.limit {
                            drop(guard);
                            let err = fail(Stop::TooLarge, &state);
                            return Some((Err(err), (body, state, clock, true)));
                        }
                        guard.hasher.update(&chunk);
                        drop(guard);
                        if tokio::time::Instant::now() >= clock.window_end
                            && let Some(stop) = clock.end_window(bytes, pace.min_rate)
                        {
                            let err = fail(stop, &state);
                            return Some((Err(err), (body, state, clock, true)));
                        }
                        Some((Ok(chunk), (body, state, clock, false)))
                    }
                }
            },
        );
        (metered.boxed(), Self(state))
    }

    pub(super) fn explain(&self, err: StorageError, pace: Pace) -> MediaError {
        match (lock(&self.0).stop, err) {
            (Some(Stop::TooLarge), _) => MediaError::TooLarge { limit: pace.limit },
            (Some(Stop::Stalled), _) => MediaError::UploadTimedOut("no data arrived for too long"),
            (Some(Stop::TooSlow), _) => {
                MediaError::UploadTimedOut("the upload arrived below the minimum rate")
            }
            (Some(Stop::Deadline), _) => {
                MediaError::UploadTimedOut("the upload took longer than allowed")
            }
            (None, StorageError::Body(e)) => MediaError::Body(e),
            (None, other) => MediaError::Storage(other),
        }
    }

    pub(super) fn finish(&self) -> (u64, Sha256Digest) {
        std::mem::take(&mut *lock(&self.0)).hasher.finish()
    }
}

impl Clock {
    /// Closes the rate window at `bytes` received: too slow if it brought
    /// less than `min_rate` per second, else a new window starts.
    fn end_window(&mut self, bytes: u64, min_rate: u64) -> Option<Stop> {
        let wanted = min_rate.saturating_mul(RATE_WINDOW.as_secs());
        if bytes - self.window_start_bytes < wanted {
            return Some(Stop::TooSlow);
        }
        self.window_start_bytes = bytes;
        self.window_end += RATE_WINDOW;
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that sends `chunk` bytes every `every`, forever.
    fn steady(chunk: usize, every: Duration) -> ByteStream {
        stream::unfold((), move |()| async move {
            tokio::time::sleep(every).await;
            Some((Ok(bytes::Bytes::from(vec![1u8; chunk])), ()))
        })
        .boxed()
    }

    async fn drain(body: ByteStream) -> (tokio::time::Duration, std::io::Error) {
        let start = tokio::time::Instant::now();
        let mut body = body;
        loop {
            if let Some(Err(e)) = body.next().await {
                return (start.elapsed(), e);
            }
        }
    }

    const PACE: Pace = Pace {
        limit: u64::MAX,
        idle: Duration::from_secs(60),
        min_rate: 1024,
        deadline: Duration::from_secs(3600),
    };

    /// A trickle under the minimum rate is cut at the end of its first
    /// 30-second window, although it never stalls long enough for the idle
    /// timeout.
    #[tokio::test(start_paused = true)]
    async fn trickles_below_the_minimum_rate_are_cut() {
        let (body, meter) = Meter::wrap(steady(100, Duration::from_secs(1)), PACE);
        let (after, _) = drain(body).await;
        assert_eq!(after.as_secs(), 30);
        assert!(matches!(
            meter.explain(StorageError::TaskFailed, PACE),
            MediaError::UploadTimedOut(why) if why.contains("minimum rate")
        ));
    }

    /// A body at the minimum rate goes on until the deadline, and a silent
    /// one until the idle timeout.
    #[tokio::test(start_paused = true)]
    async fn deadlines_and_idle_timeouts_end_bodies() {
        let pace = Pace {
            deadline: Duration::from_secs(100),
            ..PACE
        };
        let (body, meter) = Meter::wrap(steady(2048, Duration::from_secs(1)), pace);
        let (after, _) = drain(body).await;
        assert_eq!(after.as_secs(), 100);
        assert!(matches!(
            meter.explain(StorageError::TaskFailed, pace),
            MediaError::UploadTimedOut(why) if why.contains("longer")
        ));
        // Silent: with no minimum rate, the idle timeout ends it.
        let pace = Pace {
            min_rate: 0,
            ..pace
        };
        let (body, meter) = Meter::wrap(steady(2048, Duration::from_secs(3600)), pace);
        let (after, _) = drain(body).await;
        assert_eq!(after.as_secs(), 60);
        assert!(matches!(
            meter.explain(StorageError::TaskFailed, pace),
            MediaError::UploadTimedOut(why) if why.contains("no data")
        ));
    }
}

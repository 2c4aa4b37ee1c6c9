use super::*;

/// How long the "any limits?" answer is trusted: a limit set or a queue
/// paused by another process takes effect on claims within this time.
pub(super) const LIMITS_TTL: Duration = Duration::from_millis(250);

/// Which kinds of limits exist: whether any queue is paused or limited,
/// any job capped, any queue has a key limit, any a rate. Without any,
/// claiming needs no window functions; otherwise the claim has only the
/// parts for the kinds that exist.
pub(super) const ANY_LIMITS: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM queues WHERE paused = 1 OR max_running IS NOT NULL), ",
    "EXISTS (SELECT 1 FROM jobs WHERE ",
    job_capped!(),
    "), EXISTS (SELECT 1 FROM queues WHERE key_limit IS NOT NULL), ",
    "EXISTS (SELECT 1 FROM queues WHERE rate_n IS NOT NULL)"
);

impl<D: Dialect> SqlStore<D> {
    /// Forgets the cached "any limits?" answer, after this store changed
    /// queues or jobs: its own change counts at once, not after the TTL.
    pub(super) fn limits_changed(&self) {
        forget(&self.limits);
    }

    /// Whether limits may exist, from the cache alone (no query).
    pub(super) fn limits_may_exist(&self) -> bool {
        let cached = *self.limits.lock().unwrap_or_else(|e| e.into_inner());
        cached.limits.any
    }

    pub(super) async fn any_limits(&self) -> Result<Limits, StoreError> {
        let cached = *self.limits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = cached.read_at {
            if at.elapsed() < LIMITS_TTL {
                return Ok(cached.limits);
            }
        }
        let limits = read_limits::<D>(&mut *self.db.reader().acquire().await?).await?;
        self.cache_limits(limits);
        Ok(limits)
    }

    pub(super) fn cache_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = CachedLimits {
            read_at: Some(Instant::now()),
            limits,
        };
    }
}

/// Reads which kinds of limits exist now.
pub(super) async fn read_limits<D: Dialect>(conn: &mut Conn<D>) -> Result<Limits, StoreError> {
    let row = Sql::<D>::new(ANY_LIMITS)
        .fetch_optional(conn)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let queues: bool = D::get(&row, 0)?;
    let kinds = Kinds {
        jobs: D::get(&row, 1)?,
        keys: D::get(&row, 2)?,
        rates: D::get(&row, 3)?,
    };
    Ok(Limits {
        any: queues || kinds != Kinds::default(),
        kinds,
    })
}

/// What kinds of limits exist, so that claims pay only for those.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Any queue limit, paused queue, key limit, rate or per-job cap.
    pub(super) any: bool,
    /// Which of those the claim must apply besides queue limits.
    pub(super) kinds: Kinds,
}

/// [`Limits`] as last read (never read: assume every kind).
#[derive(Clone, Copy, Debug)]
pub(super) struct CachedLimits {
    pub(super) read_at: Option<Instant>,
    pub(super) limits: Limits,
}

impl Default for CachedLimits {
    fn default() -> Self {
        Self {
            read_at: None,
            limits: Limits {
                any: true,
                kinds: Kinds {
                    jobs: true,
                    keys: true,
                    rates: true,
                },
            },
        }
    }
}

pub(super) fn forget(limits: &Mutex<CachedLimits>) {
    *limits.lock().unwrap_or_else(|e| e.into_inner()) = CachedLimits::default();
}

/// The kinds of limits a limited claim applies besides queue limits and
/// pauses (which it always applies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Kinds {
    /// Per-job caps (`--max-parallel`, `--overlap queue`).
    pub(super) jobs: bool,
    /// Per-key limits.
    pub(super) keys: bool,
    /// Rates.
    pub(super) rates: bool,
}

impl Kinds {
    /// The combination numbered `i` by [`Kinds::index`].
    pub(super) fn from_index(i: usize) -> Kinds {
        Kinds {
            jobs: i & 1 != 0,
            keys: i & 2 != 0,
            rates: i & 4 != 0,
        }
    }

    pub(super) fn index(self) -> usize {
        usize::from(self.jobs) | usize::from(self.keys) << 1 | usize::from(self.rates) << 2
    }
}

//! Sync as a job: one sync at a time, observable while it runs.
//!
//! Every sync — the synchronous `POST /api/users/sync`, the async form
//! that answers 202 at once, the CLI, the demo's warm-up — runs through
//! [`SyncJobs::start`], so a second sync is refused with the running job's
//! id whichever door it came through. Finished jobs are kept (the last
//! [`KEEP_FINISHED`]) so a client polling `GET /api/users/sync/{job_id}` after
//! the end still sees the report.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;

use super::MemberCache;
use super::sync::{SyncError, SyncOptions, SyncProgress, SyncReport};

/// Finished jobs remembered for polling.
const KEEP_FINISHED: usize = 20;

/// A job id: 32 lower-case hex digits (a v4 UUID without dashes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Parses a client-supplied id; anything but 32 hex digits is refused.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| Self(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

/// What `GET /api/users/sync/{job_id}` answers.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job_id: JobId,
    pub state: JobState,
    /// Members to fetch or write (known once the id source was read).
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    /// Estimated milliseconds left, from the pace so far; null until known.
    pub eta_ms: Option<u64>,
    pub elapsed_ms: u64,
    pub force: bool,
    pub concurrency: usize,
    /// The sync's report, once done.
    pub report: Option<SyncReport>,
    /// Why it failed, once failed.
    pub error: Option<String>,
}

struct Job {
    id: JobId,
    opts: SyncOptions,
    progress: Arc<SyncProgress>,
    started: Instant,
    finished: Option<Instant>,
    outcome: Option<Result<SyncReport, String>>,
}

impl Job {
    fn status(&self) -> JobStatus {
        let total = self.progress.total.load(Ordering::Relaxed);
        let done = self.progress.done.load(Ordering::Relaxed);
        let failed = self.progress.failed.load(Ordering::Relaxed);
        let elapsed = self.finished.unwrap_or_else(Instant::now) - self.started;
        let (state, report, error) = match &self.outcome {
            None => (JobState::Running, None, None),
            Some(Ok(r)) => (JobState::Done, Some(r.clone()), None),
            Some(Err(e)) => (JobState::Failed, None, Some(e.clone())),
        };
        let handled = done + failed;
        let eta_ms = match state {
            JobState::Running if handled > 0 && total >= handled => {
                let per_item = elapsed.as_secs_f64() / handled as f64;
                Some((per_item * (total - handled) as f64 * 1000.0) as u64)
            }
            JobState::Running => None,
            _ => Some(0),
        };
        JobStatus {
            job_id: self.id.clone(),
            state,
            total,
            done,
            failed,
            eta_ms,
            elapsed_ms: elapsed.as_millis() as u64,
            force: self.opts.force,
            concurrency: self.opts.concurrency,
            report,
            error,
        }
    }
}

/// Refusal to start: a sync is already running.
#[derive(Debug, Clone, thiserror::Error)]
#[error("已有同步任务在运行 (a sync is already running: job {0:?})")]
pub struct AlreadyRunning(pub JobId);

/// A started job: its id and a way to wait for its end.
pub struct Started {
    pub id: JobId,
    pub progress: Arc<SyncProgress>,
    done: watch::Receiver<Option<Result<SyncReport, SyncError>>>,
}

impl Started {
    /// Waits for the job to end and returns its outcome.
    pub async fn wait(mut self) -> Result<SyncReport, SyncError> {
        loop {
            if let Some(outcome) = self.done.borrow_and_update().clone() {
                return outcome;
            }
            if self.done.changed().await.is_err() {
                return Err(SyncError::Interrupted);
            }
        }
    }
}

#[derive(Default)]
pub struct SyncJobs {
    /// The running job first, then finished ones, newest first.
    jobs: Mutex<VecDeque<Job>>,
}

impl SyncJobs {
    /// Starts a sync in its own task (it goes on if the caller disconnects),
    /// or refuses with the running job's id.
    pub fn start(
        &self,
        cache: &Arc<MemberCache>,
        opts: SyncOptions,
    ) -> Result<Started, AlreadyRunning> {
        let id = JobId::new();
        let progress = Arc::new(SyncProgress::default());
        {
            let Ok(mut jobs) = self.jobs.lock() else {
                return Err(AlreadyRunning(id));
            };
            if let Some(running) = jobs.iter().find(|j| j.outcome.is_none()) {
                return Err(AlreadyRunning(running.id.clone()));
            }
            jobs.push_front(Job {
                id: id.clone(),
                opts,
                progress: progress.clone(),
                started: Instant::now(),
                finished: None,
                outcome: None,
            });
            while jobs.len() > KEEP_FINISHED + 1 {
                jobs.pop_back();
            }
        }
        let (tx, rx) = watch::channel(None);
        let (cache, job_id, job_progress) = (cache.clone(), id.clone(), progress.clone());
        tokio::spawn(async move {
            let outcome = cache.sync(opts, job_progress).await;
            cache.jobs().finish(&job_id, &outcome);
            let _ = tx.send(Some(outcome));
        });
        Ok(Started {
            id,
            progress,
            done: rx,
        })
    }

    fn finish(&self, id: &JobId, outcome: &Result<SyncReport, SyncError>) {
        if let Ok(mut jobs) = self.jobs.lock()
            && let Some(job) = jobs.iter_mut().find(|j| &j.id == id)
        {
            job.finished = Some(Instant::now());
            job.outcome = Some(outcome.clone().map_err(|e| e.to_string()));
        }
    }

    pub fn status(&self, id: &JobId) -> Option<JobStatus> {
        let jobs = self.jobs.lock().ok()?;
        jobs.iter().find(|j| &j.id == id).map(Job::status)
    }

    /// The running job, if any.
    pub fn running(&self) -> Option<JobStatus> {
        let jobs = self.jobs.lock().ok()?;
        jobs.iter().find(|j| j.outcome.is_none()).map(Job::status)
    }
}

//! The daemon's critical tasks: each runs until the root token is cancelled, so one that ends
//! earlier is a failure that brings the daemon down. Their handles are kept in one set, joined at
//! shutdown and aborted when the set is dropped.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use tokio::task::{Id, JoinError, JoinHandle, JoinSet};
use tokio_util::task::AbortOnDropHandle;

use super::DaemonError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    ApiServer,
    ConnectionAcceptor,
    LogShipping,
    BackupScheduler,
    RecordPruner,
    SignalHandler,
    Metrics,
    HealthProber,
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Task::ApiServer => "API server",
            Task::ConnectionAcceptor => "connection acceptor",
            Task::LogShipping => "log shipping",
            Task::BackupScheduler => "backup scheduler",
            Task::RecordPruner => "record pruner",
            Task::SignalHandler => "signal handler",
            Task::Metrics => "metrics task",
            Task::HealthProber => "health prober",
        })
    }
}

impl Task {
    /// What it costs that the task was still running at the shutdown deadline.
    pub(super) fn when_cut_off(self) -> &'static str {
        match self {
            Task::ApiServer => {
                "in-flight RPCs were cut off; their clients see the connection drop and may retry with the same request_id"
            }
            Task::LogShipping => "log batches not yet acknowledged are sent again at next start",
            Task::BackupScheduler => "a backup it was starting is started again when due after the next start",
            Task::RecordPruner => "the prune runs again at next start",
            Task::HealthProber => "the down interval open now is closed at the last heartbeat at next start",
            Task::ConnectionAcceptor | Task::SignalHandler | Task::Metrics => "nothing is lost",
        }
    }
}

#[derive(Default)]
pub(super) struct CriticalTasks {
    set: JoinSet<Result<(), DaemonError>>,
    names: HashMap<Id, Task>,
}

impl CriticalTasks {
    pub fn spawn(&mut self, task: Task, work: impl Future<Output = Result<(), DaemonError>> + Send + 'static) {
        let id = self.set.spawn(work).id();
        self.names.insert(id, task);
    }

    /// Takes over a task another module spawned; it is aborted with the set.
    pub fn adopt(&mut self, task: Task, handle: JoinHandle<()>) {
        let handle = AbortOnDropHandle::new(handle);
        self.spawn(task, async move { handle.await.map_err(|e| failure(task, e)) });
    }

    /// The next task to end, and how it ended; `None` when no task is left.
    pub async fn next_end(&mut self) -> Option<(Task, Result<(), DaemonError>)> {
        loop {
            let (id, end) = match self.set.join_next_with_id().await? {
                Ok((id, result)) => (id, Ok(result)),
                Err(e) => (e.id(), Err(e)),
            };
            // Every task of the set was named when spawned.
            if let Some(task) = self.names.remove(&id) {
                return Some((task, end.unwrap_or_else(|e| Err(failure(task, e)))));
            }
        }
    }

    /// The tasks that have not ended yet.
    pub fn running(&self) -> Vec<Task> {
        let mut tasks: Vec<Task> = self.names.values().copied().collect();
        tasks.sort_by_key(ToString::to_string);
        tasks.dedup();
        tasks
    }
}

fn failure(task: Task, e: JoinError) -> DaemonError {
    match e.try_into_panic() {
        Ok(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            DaemonError::TaskPanicked { task, message }
        }
        Err(_) => DaemonError::TaskStopped { task },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_ended_task_is_named_with_how_it_ended() {
        let mut tasks = CriticalTasks::default();
        tasks.spawn(Task::RecordPruner, async { Ok(()) });
        let (task, end) = tasks.next_end().await.unwrap();
        assert_eq!(task, Task::RecordPruner);
        assert!(end.is_ok());

        tasks.spawn(Task::BackupScheduler, async { panic!("scheduler broke") });
        let (task, end) = tasks.next_end().await.unwrap();
        assert_eq!(task, Task::BackupScheduler);
        match end {
            Err(DaemonError::TaskPanicked { task: Task::BackupScheduler, message }) => {
                assert_eq!(message, "scheduler broke")
            }
            other => panic!("expected a panic report, got {other:?}"),
        }
        assert!(tasks.next_end().await.is_none(), "no task is left");
    }

    #[tokio::test]
    async fn adopted_tasks_are_listed_while_running_and_aborted_with_the_set() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut tasks = CriticalTasks::default();
        // The sender lives inside the task: the channel closes only when the task is gone.
        tasks.adopt(
            Task::Metrics,
            tokio::spawn(async move {
                let _tx = tx;
                std::future::pending::<()>().await;
            }),
        );
        tasks.spawn(Task::SignalHandler, std::future::pending());
        assert_eq!(tasks.running(), vec![Task::Metrics, Task::SignalHandler]);
        drop(tasks);
        let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(closed, Ok(None), "the adopted task must be aborted when the set is dropped");
    }
}

//! How long pods take to stop. A pod that is still there when its grace period has run out is
//! SIGKILLed: every rollout and scale-down then waits the whole period, and whatever the process was
//! finishing is cut off. A watch sees each pod's deletion start (its `deletionTimestamp` appears) and
//! end (it is gone).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::oneshot;

/// One pod's stop: how long it took from the start of its deletion, and its grace period.
#[derive(Debug)]
pub struct Termination {
    pub pod: String,
    pub took: Duration,
    pub grace: Duration,
}

impl Termination {
    /// Whether it took the whole grace period, and so was killed.
    pub fn used_the_whole_grace_period(&self) -> bool {
        self.took >= self.grace
    }
}

/// A watch of the stops of the pods that `selector` picks in `pods`' namespace.
pub struct Terminations {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<Termination>>,
}

impl Terminations {
    pub fn watch(pods: Api<Pod>, selector: &str) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let config = watcher::Config::default().labels(selector);
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(pods, config).default_backoff());
            let mut deleting: HashMap<String, (Instant, Duration)> = HashMap::new();
            let mut ended = Vec::new();
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    _ = &mut stopped => break,
                };
                match event {
                    Some(Ok(watcher::Event::Apply(pod))) => {
                        if pod.metadata.deletion_timestamp.is_some() {
                            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
                            let grace = Duration::from_secs(grace.unsigned_abs());
                            deleting.entry(pod.name_any()).or_insert((Instant::now(), grace));
                        }
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        // A pod seen only once gone (or already deleting when the watch began) is not timed.
                        if let Some((since, grace)) = deleting.remove(&pod.name_any()) {
                            ended.push(Termination { pod: pod.name_any(), took: since.elapsed(), grace });
                        }
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            ended
        });
        Self { stop, task }
    }

    /// The stops seen so far.
    pub async fn stop(self) -> Vec<Termination> {
        // Err only if the watch ended by itself, which it then did.
        let _ended: Result<(), ()> = self.stop.send(());
        self.task.await.expect("the termination watch panicked")
    }
}

/// "3 pods stopped in 6.1–7.4 s (the slowest shop-command-…; grace 30 s); 0 used the whole grace
/// period", for the log.
pub fn summary(terminations: &[Termination]) -> String {
    let fastest = terminations.iter().map(|t| t.took).min();
    match (terminations.iter().max_by_key(|t| t.took), fastest) {
        (Some(slowest), Some(fastest)) => format!(
            "{} pods stopped in {:.1}–{:.1} s (the slowest {}; grace {} s); {} used the whole grace period",
            terminations.len(),
            fastest.as_secs_f64(),
            slowest.took.as_secs_f64(),
            slowest.pod,
            slowest.grace.as_secs(),
            terminations.iter().filter(|t| t.used_the_whole_grace_period()).count()
        ),
        _ => "no pod stopped".to_owned(),
    }
}

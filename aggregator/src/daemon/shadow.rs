//! The shadow strategy on a thread of its own, so that a slow (or stuck) shadow plugin never
//! delays the live tick: it gets each tick's inputs while the live engine computes, and its
//! answer is taken if it comes within a budget; otherwise the recording says why it has none
//! (late, or still busy with an earlier tick and so not given this one).

use std::sync::mpsc;
use std::time::Duration;

use aggregator_core::engine::{Engine, Event, Outcome, TickInputs};
use aggregator_core::episode::Episode;
use aggregator_core::presence::Battery;
use tokio::sync::oneshot;

use crate::record::ShadowMissing;

/// The most a tick waits for the shadow's answer, after the live values are published: a
/// quarter of the tick, at most this.
const MOST_WAIT: Duration = Duration::from_millis(250);

/// One tick's inputs for the shadow.
struct Job {
    batteries: Vec<Battery>,
    inputs: TickInputs,
    publishing: bool,
    answer: oneshot::Sender<Outcome>,
}

/// The shadow engine's thread, and the answer it owes.
pub(super) struct Shadow {
    jobs: mpsc::Sender<Job>,
    /// The answer to the last inputs sent, while it has not come.
    owed: Option<oneshot::Receiver<Outcome>>,
    /// Whether this tick's inputs went to it.
    sent: bool,
    /// Seconds of ticks it did not get (busy): added to the next tick's, so that its
    /// counting of charge loses no time.
    missed_s: f64,
    stopped: bool,
    /// It gave no answer within the budget (said once for the run).
    late: Episode,
    budget: Duration,
}

impl Shadow {
    /// Starts the thread; `update_interval` sets the budget.
    pub(super) fn start(mut engine: Engine, update_interval: Duration) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("shadow".into())
            .spawn(move || {
                crate::plugins::as_shadow(|| {
                    for job in queue {
                        engine.set_publishing(job.publishing);
                        let outcome = engine.tick(&job.batteries, &job.inputs);
                        // Nobody waits any more when it was late: the answer is dropped.
                        let _ = job.answer.send(outcome);
                    }
                })
            })?;
        Ok(Self {
            jobs,
            owed: None,
            sent: false,
            missed_s: 0.0,
            stopped: false,
            late: Episode::default(),
            budget: (update_interval / 4).min(MOST_WAIT),
        })
    }

    /// Hands the tick's inputs to the shadow, unless it is still busy with an earlier tick.
    pub(super) fn give(&mut self, batteries: &[Battery], inputs: &TickInputs, publishing: bool) {
        self.sent = false;
        if self.stopped {
            return;
        }
        if let Some(owed) = &mut self.owed {
            match owed.try_recv() {
                // A late answer to an earlier tick: that tick is recorded without it.
                Ok(_) => self.owed = None,
                Err(oneshot::error::TryRecvError::Empty) => {
                    self.missed_s += inputs.dt_s;
                    return;
                }
                Err(oneshot::error::TryRecvError::Closed) => return self.stop(),
            }
        }
        let (answer, owed) = oneshot::channel();
        let mut inputs = inputs.clone();
        inputs.dt_s += std::mem::take(&mut self.missed_s);
        let job = Job {
            batteries: batteries.to_vec(),
            inputs,
            publishing,
            answer,
        };
        if self.jobs.send(job).is_err() {
            return self.stop();
        }
        self.owed = Some(owed);
        self.sent = true;
    }

    /// The shadow's outcome of this tick's inputs, waited for within the budget; else why
    /// there is none. Its strategy faults are logged here (once per episode, as the engine
    /// reports them); the engine calls its plugins through the guard, which catches a panic.
    pub(super) async fn take(&mut self) -> Result<Outcome, ShadowMissing> {
        if self.stopped {
            return Err(ShadowMissing::Stopped);
        }
        let Some(owed) = self.owed.as_mut().filter(|_| self.sent) else {
            return Err(ShadowMissing::Busy);
        };
        let outcome = match tokio::time::timeout(self.budget, owed).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => {
                self.stop();
                return Err(ShadowMissing::Stopped);
            }
            Err(_) => {
                if self.late.start() {
                    tracing::warn!(
                        "the shadow strategy gave no answer within {} ms: such ticks are \
                         recorded without its limits (shadow/skipped); the live limits are not \
                         affected",
                        self.budget.as_millis()
                    );
                }
                return Err(ShadowMissing::Late);
            }
        };
        self.owed = None;
        for event in &outcome.events {
            if let Event::StrategyFault(msg) = event {
                tracing::warn!(
                    "shadow strategy fault: {msg} (the shadow publishes nothing; the live \
                     limits are not affected)"
                );
            }
        }
        Ok(outcome)
    }

    fn stop(&mut self) {
        if !self.stopped {
            tracing::error!(
                "the shadow strategy's thread has ended: no shadow limits from now on (the \
                 live limits are not affected)"
            );
        }
        self.stopped = true;
        self.owed = None;
    }
}

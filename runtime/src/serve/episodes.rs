//! The episodes a firmware that measures rewards reports ([`EpisodeStep`] in each
//! observation), as serving follows them: the agent starts each one from a fresh state, the
//! [`Recorder`] stores them, their returns go into the summary, and a followed policy takes
//! over between two of them, never within one.

use dreamer_cli::errln;
use dreamer_wire::{EpisodeStep, Hello};

use crate::agent::Agent;
use crate::explore::Exploration;
use crate::record::Recorder;

use super::{ServeSummary, hello_for};

/// A policy to switch to at the next episode start.
pub struct NextPolicy {
    pub agent: Agent,
    /// Its id in recorded episodes ([`Recorder::set_policy`]).
    pub policy_id: String,
    /// How to name it in the log (e.g. `v7`).
    pub label: String,
}

/// What serving does with the firmware's episodes besides acting in them.
#[derive(Default)]
pub struct Experience<'a> {
    /// Records every episode (the firmware must measure rewards).
    pub recorder: Option<&'a mut Recorder>,
    /// Asked at each episode start for a policy to switch to.
    pub next_policy: Option<&'a mut dyn FnMut() -> Option<NextPolicy>>,
    /// Noise on each action sent, as the trainer's collection explores (the model's next
    /// transition and the recorded episode see the action actually sent).
    pub exploration: Option<&'a mut Exploration>,
}

impl Experience<'_> {
    /// Whether anything here needs the firmware's episodes.
    pub fn needs_rewards(&self) -> bool {
        self.recorder.is_some() || self.next_policy.is_some()
    }
}

/// The episode in progress and what is done at its boundaries.
pub(super) struct EpisodeTracker<'a> {
    experience: Experience<'a>,
    /// The firmware measures rewards (known once its handshake answer came).
    measured: bool,
    /// An episode is in progress: its first observation was answered.
    open: bool,
    episode_return: f64,
    /// Decisions taken in the episode in progress.
    decisions: u64,
    /// The action sent for the previous observation, which the next reward is for; zero
    /// before an episode's first action, as the trainer's episodes store it.
    last_action: Vec<f32>,
}

impl<'a> EpisodeTracker<'a> {
    pub(super) fn new(experience: Experience<'a>, action_size: usize) -> Self {
        Self {
            experience,
            measured: false,
            open: false,
            episode_return: 0.0,
            decisions: 0,
            last_action: vec![0.0; action_size],
        }
    }

    /// Whether serving needs the firmware's episodes (it records or follows policies).
    pub(super) fn needs_rewards(&self) -> bool {
        self.experience.needs_rewards()
    }

    /// The handshake answer said whether the firmware measures rewards; a new session starts
    /// a new episode at its first observation (the one in progress is cut there).
    pub(super) fn session_opened(&mut self, measured: bool) {
        self.close(None);
        self.measured = measured;
    }

    /// Before the agent answers an observation: ends and starts episodes as the firmware
    /// reports them and records the transition into this observation (`state`: what the
    /// policy observes of the firmware's values; `pixels`: the camera frame, empty without).
    pub(super) fn observe(
        &mut self,
        agent: &mut Agent,
        step: EpisodeStep,
        state: &[f32],
        pixels: &[u8],
        hello: &Hello,
        summary: &mut ServeSummary,
    ) {
        if !self.measured {
            return;
        }
        if !self.open || step.first {
            self.close(Some(summary));
            self.switch_policy(agent, hello, summary);
            agent.reset();
            self.open = true;
            self.episode_return = 0.0;
            self.decisions = 0;
            self.last_action.fill(0.0);
            if let Some(recorder) = self.experience.recorder.as_deref_mut() {
                recorder.begin();
                recorder.step(state, pixels, &self.last_action, 0.0, 1.0);
            }
        } else {
            self.episode_return += f64::from(step.reward);
            self.decisions += 1;
            if let Some(recorder) = self.experience.recorder.as_deref_mut() {
                if recorder.full() {
                    // Longer than an episode may be: the rest is recorded as a new episode
                    // from this observation (the agent keeps its state).
                    self.last_action.fill(0.0);
                    recorder.begin();
                    recorder.step(state, pixels, &self.last_action, 0.0, 1.0);
                } else {
                    let discount = if step.terminal { 0.0 } else { 1.0 };
                    recorder.step(state, pixels, &self.last_action, step.reward, discount);
                }
            }
        }
        if step.terminal {
            self.close(Some(summary));
        }
    }

    /// After the agent's step: the exploration noise, if any, goes on its action, which the
    /// agent then takes as its own.
    pub(super) fn explore(&mut self, agent: &mut Agent) {
        if let Some(exploration) = self.experience.exploration.as_deref_mut() {
            let noisy = exploration.apply(agent.action());
            // Cannot fail: the noisy action has the action's size and is finite.
            let _ = agent.override_action(noisy);
        }
    }

    /// After the agent answered: the action sent.
    pub(super) fn answered(&mut self, action: &[f32]) {
        let n = self.last_action.len().min(action.len());
        self.last_action[..n].copy_from_slice(&action[..n]);
    }

    /// Ends the episode in progress (recorded as far as it got); its return goes into
    /// `summary` when it ended as the firmware reported, not when serving stopped within it.
    pub(super) fn close(&mut self, summary: Option<&mut ServeSummary>) {
        if !self.open {
            return;
        }
        self.open = false;
        if let Some(recorder) = self.experience.recorder.as_deref_mut() {
            recorder.end();
        }
        if let Some(summary) = summary {
            errln!(
                "serve: episode {}: return {:.3} over {} decisions",
                summary.episode_returns.len(),
                self.episode_return,
                self.decisions
            );
            summary.episode_returns.push(self.episode_return);
        }
    }

    /// At an episode start: the followed policy, if one came and fits this firmware, replaces
    /// the agent and names the episodes recorded from now on.
    fn switch_policy(&mut self, agent: &mut Agent, hello: &Hello, summary: &mut ServeSummary) {
        let Some(next) = self.experience.next_policy.as_mut().and_then(|f| f()) else {
            return;
        };
        let (new, current) = (
            &next.agent.manifest().observation,
            &agent.manifest().observation,
        );
        let fits = hello_for(next.agent.manifest()).is_ok_and(|h| &h == hello)
            && new.state.is_some() == current.state.is_some()
            && new.pixels.is_some() == current.pixels.is_some();
        if !fits {
            errln!(
                "serve: policy {}: refused, keeping the current policy: its task, layout or observation differs from the session's",
                next.label
            );
            return;
        }
        if let Some(recorder) = self.experience.recorder.as_deref_mut()
            && let Err(e) = recorder.set_policy(&next.policy_id)
        {
            errln!(
                "serve: policy {}: refused, keeping the current policy: {e}",
                next.label
            );
            return;
        }
        *agent = next.agent;
        summary.policy_switches += 1;
        errln!(
            "serve: episode {}: now policy {}",
            summary.episode_returns.len(),
            next.label
        );
    }
}

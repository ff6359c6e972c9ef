//! Recording the brain's decision rounds: with `RIGMIND_RECORD_ROUNDS=FILE` set,
//! every call of the release policy and of the resource manager is appended to
//! FILE as one JSON line ([`rigmind_decide::record::Round`]): what it saw and what
//! it decided. tests/replay.rs replays them through the simulator's rounds. Off
//! by default: a round carries the whole state.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rigmind_decide::record::{BrainRound, ResourcesRound, Round, RECORD_ROUNDS_ENV};
use rigmind_decide::resources::{CardFacts, InFlight, RmAction, RmConfig};

use crate::policy::Action;
use crate::state::BrainState;

/// Where rounds are recorded (nowhere unless asked). Clones append to the same
/// file, one whole line per write.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    file: Option<(PathBuf, Arc<std::fs::File>)>,
    /// Runs of decide-and-apply rounds begun.
    converges: u64,
}

impl Recorder {
    /// Records into the file `RIGMIND_RECORD_ROUNDS` names, if set; a file that
    /// cannot be opened is said and nothing is recorded.
    pub fn from_env() -> Self {
        let Some(path) = std::env::var_os(RECORD_ROUNDS_ENV).map(PathBuf::from) else {
            return Self::default();
        };
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        match opened {
            Ok(f) => Self {
                file: Some((path, Arc::new(f))),
                converges: 0,
            },
            Err(e) => {
                tracing::warn!(
                    "{RECORD_ROUNDS_ENV}: cannot open {}: {e}; no rounds are recorded",
                    path.display()
                );
                Self::default()
            }
        }
    }

    /// Whether rounds are recorded (the state is serialized only then).
    pub fn on(&self) -> bool {
        self.file.is_some()
    }

    /// Starts a new run of decide-and-apply rounds.
    pub fn begin_converge(&mut self) {
        self.converges += 1;
    }

    /// One call of the release policy, round `round` of the current run.
    pub fn brain(&self, round: u32, now: DateTime<Utc>, state: &BrainState, actions: &[Action]) {
        if !self.on() {
            return;
        }
        self.write(&Round::Brain(BrainRound {
            converge: self.converges,
            round,
            now,
            state: Cow::Borrowed(state),
            actions: actions.into(),
        }));
    }

    /// One call of the resource manager, with what it observed.
    pub fn resources(
        &self,
        now: DateTime<Utc>,
        config: &RmConfig,
        cards: &[CardFacts],
        in_flight: &BTreeMap<String, InFlight>,
        state: &BrainState,
        actions: &[RmAction],
    ) {
        if !self.on() {
            return;
        }
        self.write(&Round::Resources(ResourcesRound {
            now,
            config: Cow::Borrowed(config),
            cards: cards.into(),
            in_flight: Cow::Borrowed(in_flight),
            state: Cow::Borrowed(state),
            actions: actions.into(),
        }));
    }

    fn write(&self, round: &Round<'_>) {
        let Some((path, file)) = &self.file else {
            return;
        };
        let written = serde_json::to_vec(round)
            .map_err(std::io::Error::from)
            .and_then(|mut line| {
                line.push(b'\n');
                (&**file).write_all(&line)
            });
        if let Err(e) = written {
            tracing::warn!("{RECORD_ROUNDS_ENV}: writing {}: {e}", path.display());
        }
    }
}

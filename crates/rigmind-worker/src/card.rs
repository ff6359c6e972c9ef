//! A GPU worker's card: what it is (telemetry, UUID), what it holds (the model in
//! its LLM server), the state it is in, and the safety gates read from it. The
//! claim rule itself ([`tier`]) lives in `rigmind-decide`, which the simulator
//! calls too; it is re-exported here.

use rigmind_gpu::{CpuTemp, GpuInfo, HostMemory, Telemetry};
use rigmind_types::{GpuState, TaskClass};

pub use rigmind_decide::claim::{state_for, tier, ClaimContext};

/// The card of a GPU worker: its telemetry and what it holds.
pub struct Card {
    /// Shared with the runner's memory probe (one NVML handle, one fake warning).
    telemetry: std::sync::Arc<dyn Telemetry>,
    pub index: u32,
    pub info: GpuInfo,
    /// The model its LLM server holds (as far as this worker knows).
    pub model: Option<String>,
    pub state: GpuState,
    /// When it last moved between its LLM and script states.
    pub state_since: chrono::DateTime<chrono::Utc>,
    /// When it last finished an llm task or a load.
    pub llm_idle_since: Option<chrono::DateTime<chrono::Utc>>,
}

impl Card {
    pub fn new(telemetry: Box<dyn Telemetry>, info: GpuInfo) -> Self {
        Self {
            telemetry: telemetry.into(),
            index: info.index,
            info,
            model: None,
            state: GpuState::Idle,
            state_since: rigmind_queue::time::now(),
            llm_idle_since: None,
        }
    }

    /// `nvml` or `fake`.
    pub fn source(&self) -> &'static str {
        self.telemetry.kind()
    }

    /// Reads the card again; keeps the last reading if this one fails.
    pub fn refresh(&mut self) -> &GpuInfo {
        match self.telemetry.read(self.index) {
            Ok(i) => self.info = i,
            Err(e) => tracing::warn!(gpu = self.index, "reading the GPU: {e}"),
        }
        &self.info
    }

    /// A probe of the card's used memory, for the runner's unload wait.
    pub fn probe(&self) -> impl Fn() -> Option<u64> + Send + Sync + 'static {
        let (telemetry, index) = (self.telemetry.clone(), self.index);
        move || telemetry.read(index).ok().map(|i| i.memory_used_mb)
    }

    /// A sampler of the card's memory and utilisation for one running task.
    pub fn sampler(&self) -> crate::gpusample::GpuSample {
        crate::gpusample::GpuSample::new(self.telemetry.clone(), self.index)
    }

    /// Moves the card to `state`, noting when it crossed between LLM and script.
    pub fn set_state(&mut self, state: GpuState) {
        if state.is_llm() != self.state.is_llm() {
            self.state_since = rigmind_queue::time::now();
        }
        self.state = state;
    }

    /// The state the card is in while running a task of `class` (or nothing).
    pub fn state_for(&self, running: Option<(TaskClass, &str)>) -> GpuState {
        state_for(self.model.as_deref(), running)
    }
}

/// What the gates were judged on: the host's memory and the CPU's hottest sensor
/// (either `None` when it could not be read), and the gates violated.
pub struct GateReading {
    pub host: Option<HostMemory>,
    pub cpu: Option<CpuTemp>,
    pub violations: Vec<String>,
}

/// The safety gates violated now, read from the host, the CPU's sensors and the card.
/// Host memory that cannot be read holds nothing against heavy work (it is logged).
pub fn gates(safety: &rigmind_config::Safety, card: Option<&GpuInfo>) -> GateReading {
    let cpu = rigmind_gpu::read_cpu_temp();
    let host = rigmind_gpu::read_host_memory()
        .map_err(|e| tracing::warn!("reading host memory: {e}"))
        .ok();
    let unknown = HostMemory {
        ram_total_mb: u64::MAX,
        ram_available_mb: u64::MAX,
        swap_total_mb: 0,
        swap_used_mb: 0,
    };
    let violations = rigmind_gpu::safety_violations(
        safety,
        host.as_ref().unwrap_or(&unknown),
        card,
        cpu.as_ref(),
    );
    GateReading {
        host,
        cpu,
        violations,
    }
}

//! The run's lifecycle: one explicit state, changed only through the
//! checked transition table [`next`], plus the facts each transition
//! records (when the guest was ready, why a shutdown was asked, how the
//! run ended).
//!
//! ```text
//!  Prelaunch ──Started (`cont`)──> Booting       (`--paused` only: every vCPU held before its first instruction)
//!  Prelaunch ──ShutdownAsked──> ShuttingDown     (the run then ends at once: nothing runs to ask)
//!  Booting ──GuestReady──> Ready ──SwitchStarted──> Switching
//!                            ^                          │
//!                            └───────SwitchEnded────────┘
//!  Booting / Ready / Switching ──ShutdownAsked──> ShuttingDown
//!  ShuttingDown ──GuestReady / SwitchEnded──> ShuttingDown  (a boot or a switch that was
//!                                                            under way completes; never Ready again)
//!  any but Exited ──Ended──> Exited   (terminal: every event is refused)
//! ```
//!
//! A refused transition changes nothing and is logged: as a warning (a
//! bug: the callers check what they may ask first), or at debug level
//! once the run has ended (events from the loop's last batch, a second
//! fault among them, are moot: the first outcome wins). Asking for a
//! shutdown twice does nothing (the first request's reason stays).

use std::time::Duration;

use crate::api::protocol::ShutdownCause;
use crate::devices::hypercall::GuestPanic;
use crate::exit_code::ExitCode;

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `--paused`: the vCPU threads wait at the hold gate before the
    /// guest's first instruction, until a client sends `cont`.
    Prelaunch,
    /// vCPUs started; the guest has not reported ready.
    Booting,
    /// The guest runs; no switch in progress.
    Ready,
    /// A runtime mode switch is in progress.
    Switching,
    /// The host asked the guest to shut down; the grace period runs.
    ShuttingDown,
    /// The run ended: the loop stops, the vCPUs are joined, the report follows.
    Exited,
}

/// What happened to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `cont`: the held vCPUs of a `--paused` run start the guest.
    Started,
    /// The guest reported ready (HC_READY).
    GuestReady,
    /// The coordinator accepted a switch request.
    SwitchStarted,
    /// The switch in progress ended (completed or failed).
    SwitchEnded,
    /// The host asked the guest to shut down (duration, signal, quit, --stop-above).
    ShutdownAsked,
    /// The run ended: guest exit or panic, fault, grace timeout, second signal.
    Ended,
}

/// The transition table: the state after `event` in `from`, or `None`
/// when the transition is illegal.
pub fn next(from: State, event: Event) -> Option<State> {
    use Event as E;
    use State as S;
    match (from, event) {
        (S::Exited, _) => None,
        (_, E::Ended) => Some(S::Exited),
        (S::Prelaunch, E::Started) => Some(S::Booting),
        (S::Booting, E::GuestReady) => Some(S::Ready),
        (S::Ready, E::SwitchStarted) => Some(S::Switching),
        (S::Switching, E::SwitchEnded) => Some(S::Ready),
        (S::Prelaunch | S::Booting | S::Ready | S::Switching, E::ShutdownAsked) => Some(S::ShuttingDown),
        (S::ShuttingDown, E::GuestReady | E::SwitchEnded) => Some(S::ShuttingDown),
        _ => None,
    }
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    GuestExit(u32),
    GuestPanic(GuestPanic),
    TripleFault {
        cpu: u32,
    },
    TextWrite {
        cpu: u32,
        addr: u64,
    },
    VcpuFault {
        cpu: u32,
        what: String,
    },
    ShutdownTimeout,
    Forced,
    /// Shut down before `cont` started a `--paused` guest (a clean end:
    /// nothing ran).
    NeverStarted,
}

impl Outcome {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::GuestExit(s) => ExitCode::from_guest_status(*s),
            Outcome::GuestPanic(_) => ExitCode::GuestPanic,
            Outcome::TripleFault { .. } => ExitCode::TripleFault,
            Outcome::TextWrite { .. } => ExitCode::TextWrite,
            Outcome::VcpuFault { .. } => ExitCode::VcpuFault,
            Outcome::ShutdownTimeout | Outcome::Forced => ExitCode::ShutdownTimeout,
            Outcome::NeverStarted => ExitCode::Ok,
        }
    }
}

/// Why the host asked the guest to shut down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownAsk {
    /// As the SHUTDOWN event names it.
    pub cause: ShutdownCause,
    /// In words, for the console and the outcome line.
    pub reason: String,
}

/// The state and what its transitions recorded.
#[derive(Debug)]
pub struct Lifecycle {
    state: State,
    /// Whether the vCPUs were let run (always, but in a `--paused` run
    /// that ended before `cont`).
    started: bool,
    /// Run time when the guest reported ready.
    ready_at: Option<Duration>,
    shutdown: Option<ShutdownAsk>,
    outcome: Option<Outcome>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Lifecycle {
    /// A run that boots at once, or (`paused`) waits for `cont` in Prelaunch.
    pub fn new(paused: bool) -> Self {
        let state = if paused { State::Prelaunch } else { State::Booting };
        Self { state, started: !paused, ready_at: None, shutdown: None, outcome: None }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn ready_at(&self) -> Option<Duration> {
        self.ready_at
    }

    pub fn shutdown(&self) -> Option<&ShutdownAsk> {
        self.shutdown.as_ref()
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    pub fn exited(&self) -> bool {
        self.state == State::Exited
    }

    /// Applies `event` if the table allows it; logs and refuses it otherwise.
    fn apply(&mut self, event: Event) -> bool {
        match next(self.state, event) {
            Some(to) => {
                if to != self.state {
                    log::debug!("run: {:?} -> {to:?} ({event:?})", self.state);
                }
                self.state = to;
                true
            }
            None if self.state == State::Exited => {
                log::debug!("run: {event:?} after the end; ignored");
                false
            }
            None => {
                log::warn!("run: {event:?} refused in state {:?}", self.state);
                false
            }
        }
    }

    /// `cont`: a `--paused` run starts its vCPUs; false (nothing
    /// changes) in any other state.
    pub fn start(&mut self) -> bool {
        let ok = self.state == State::Prelaunch && self.apply(Event::Started);
        if ok {
            self.started = true;
        }
        ok
    }

    /// Whether the vCPUs were let run.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The guest reported ready `at` this run time.
    pub fn guest_ready(&mut self, at: Duration) -> bool {
        let ok = self.apply(Event::GuestReady);
        if ok {
            self.ready_at = Some(at);
        }
        ok
    }

    pub fn switch_started(&mut self) -> bool {
        self.apply(Event::SwitchStarted)
    }

    pub fn switch_ended(&mut self) -> bool {
        self.apply(Event::SwitchEnded)
    }

    /// Records a shutdown request; false (and nothing changes) when one
    /// was asked already or the run has ended.
    pub fn ask_shutdown(&mut self, ask: ShutdownAsk) -> bool {
        if self.shutdown.is_some() {
            return false;
        }
        let ok = self.apply(Event::ShutdownAsked);
        if ok {
            self.shutdown = Some(ask);
        }
        ok
    }

    /// Ends the run with `outcome`; the first outcome wins.
    pub fn end(&mut self, outcome: Outcome) -> bool {
        let ok = self.apply(Event::Ended);
        if ok {
            self.outcome = Some(outcome);
        }
        ok
    }

    /// `query-status`'s word for the state.
    pub fn status_word(&self) -> &'static str {
        match self.state {
            State::Prelaunch => "prelaunch",
            State::Booting => "booting",
            State::Ready | State::Switching => "running",
            State::ShuttingDown => "shutting-down",
            // Only seen by a request in the loop's last batch: what the
            // run was doing when it ended.
            State::Exited if self.shutdown.is_some() => "shutting-down",
            State::Exited if self.ready_at.is_some() => "running",
            State::Exited if !self.started => "prelaunch",
            State::Exited => "booting",
        }
    }

    /// Why the run ended, as the SHUTDOWN event says it: what the guest
    /// did, or what the host asked of it.
    pub fn shutdown_cause(&self) -> ShutdownCause {
        match (&self.outcome, self.shutdown.as_ref().map(|s| s.cause)) {
            (Some(Outcome::GuestPanic(_)), _) => ShutdownCause::GuestPanic,
            (Some(Outcome::TripleFault { .. }), _) => ShutdownCause::GuestReset,
            (Some(Outcome::VcpuFault { .. }), _) => ShutdownCause::HostError,
            (Some(Outcome::TextWrite { .. }), _) => ShutdownCause::GuestPanic,
            (Some(Outcome::Forced), _) => ShutdownCause::HostSignal,
            (_, Some(asked)) => asked,
            (Some(Outcome::ShutdownTimeout), None) => ShutdownCause::HostError,
            (Some(Outcome::NeverStarted), None) => ShutdownCause::HostError,
            (Some(Outcome::GuestExit(_)) | None, None) => ShutdownCause::GuestShutdown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [State; 6] =
        [State::Prelaunch, State::Booting, State::Ready, State::Switching, State::ShuttingDown, State::Exited];
    const EVENTS: [Event; 6] = [
        Event::Started,
        Event::GuestReady,
        Event::SwitchStarted,
        Event::SwitchEnded,
        Event::ShutdownAsked,
        Event::Ended,
    ];

    #[test]
    fn exited_is_terminal_and_every_other_state_can_end() {
        for e in EVENTS {
            assert_eq!(next(State::Exited, e), None, "{e:?}");
        }
        for s in STATES.into_iter().filter(|&s| s != State::Exited) {
            assert_eq!(next(s, Event::Ended), Some(State::Exited), "{s:?}");
        }
    }

    #[test]
    fn shutting_down_never_goes_back() {
        for e in EVENTS {
            let to = next(State::ShuttingDown, e);
            assert!(matches!(to, None | Some(State::ShuttingDown | State::Exited)), "{e:?} -> {to:?}");
        }
        // What was under way when the shutdown was asked completes.
        assert_eq!(next(State::ShuttingDown, Event::GuestReady), Some(State::ShuttingDown));
        assert_eq!(next(State::ShuttingDown, Event::SwitchEnded), Some(State::ShuttingDown));
        assert_eq!(next(State::ShuttingDown, Event::SwitchStarted), None);
    }

    #[test]
    fn switching_only_from_ready_and_back() {
        for s in STATES {
            let to = next(s, Event::SwitchStarted);
            assert_eq!(to.is_some(), s == State::Ready, "{s:?} -> {to:?}");
        }
        assert_eq!(next(State::Ready, Event::SwitchStarted), Some(State::Switching));
        assert_eq!(next(State::Switching, Event::SwitchEnded), Some(State::Ready));
        assert_eq!(next(State::Ready, Event::SwitchEnded), None);
        assert_eq!(next(State::Switching, Event::GuestReady), None);
    }

    #[test]
    fn boot_and_shutdown_requests() {
        assert_eq!(next(State::Booting, Event::GuestReady), Some(State::Ready));
        assert_eq!(next(State::Ready, Event::GuestReady), None);
        for s in [State::Booting, State::Ready, State::Switching] {
            assert_eq!(next(s, Event::ShutdownAsked), Some(State::ShuttingDown), "{s:?}");
        }
        assert_eq!(next(State::ShuttingDown, Event::ShutdownAsked), None);
    }

    #[test]
    fn the_lifecycle_records_its_facts_and_keeps_the_first_outcome() {
        let mut l = Lifecycle::default();
        assert_eq!(l.status_word(), "booting");
        assert!(!l.switch_started(), "no switch while booting");
        assert!(l.guest_ready(Duration::from_millis(5)));
        assert_eq!(
            (l.state(), l.ready_at(), l.status_word()),
            (State::Ready, Some(Duration::from_millis(5)), "running")
        );
        assert!(l.switch_started() && l.state() == State::Switching);
        let ask = ShutdownAsk { cause: ShutdownCause::HostDuration, reason: "duration".into() };
        assert!(l.ask_shutdown(ask.clone()));
        assert!(!l.ask_shutdown(ShutdownAsk { cause: ShutdownCause::HostSignal, reason: "signal".into() }));
        assert_eq!(l.shutdown(), Some(&ask));
        assert!(l.switch_ended() && l.state() == State::ShuttingDown);
        assert_eq!(l.status_word(), "shutting-down");
        assert!(l.end(Outcome::GuestExit(0)));
        assert!(!l.end(Outcome::TripleFault { cpu: 1 }));
        assert_eq!(l.outcome(), Some(&Outcome::GuestExit(0)));
        assert!(l.exited());
        assert_eq!(l.shutdown_cause(), ShutdownCause::HostDuration);
        assert_eq!(l.status_word(), "shutting-down");
    }

    #[test]
    fn prelaunch_only_starts_or_ends() {
        for s in STATES {
            let to = next(s, Event::Started);
            assert_eq!(to.is_some(), s == State::Prelaunch, "{s:?} -> {to:?}");
        }
        for e in [Event::GuestReady, Event::SwitchStarted, Event::SwitchEnded] {
            assert_eq!(next(State::Prelaunch, e), None, "{e:?}");
        }
        let mut l = Lifecycle::new(true);
        assert_eq!((l.state(), l.status_word(), l.started()), (State::Prelaunch, "prelaunch", false));
        assert!(!l.switch_started(), "no switch before the guest runs");
        assert!(l.start() && l.state() == State::Booting && l.started());
        assert!(!l.start(), "a second cont starts nothing");
        let mut l = Lifecycle::new(true);
        assert!(l.ask_shutdown(ShutdownAsk { cause: ShutdownCause::HostQmpQuit, reason: "quit".into() }));
        assert!(!l.start(), "no cont once a shutdown was asked");
        assert!(l.end(Outcome::NeverStarted));
        assert_eq!(l.shutdown_cause(), ShutdownCause::HostQmpQuit);
        assert_eq!(l.outcome().map(Outcome::exit_code), Some(ExitCode::Ok));
    }

    #[test]
    fn a_fault_outranks_the_shutdown_asked() {
        let mut l = Lifecycle::default();
        l.ask_shutdown(ShutdownAsk { cause: ShutdownCause::HostQmpQuit, reason: "quit".into() });
        l.end(Outcome::TripleFault { cpu: 0 });
        assert_eq!(l.shutdown_cause(), ShutdownCause::GuestReset);
        let mut l = Lifecycle::default();
        l.end(Outcome::ShutdownTimeout);
        assert_eq!((l.shutdown_cause(), l.status_word()), (ShutdownCause::HostError, "booting"));
    }
}

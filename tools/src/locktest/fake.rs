//! A fake tester VM for the runner's tests: the QMP commands of the lock
//! tester over a small model of the eight threads and locks (rt: priority
//! inheritance and deadlock detection at the blocking call; mainline:
//! neither). Commands run asynchronously: a posted command takes effect at
//! the next state read (or `lag` reads later), before the state is shown.

use serde_json::{Value, json};

use switcher::locktest::{LOCKS, Opcode, THREADS};
use switcher::profile::{LockMode, Profile};

use rtswitch::api::client::ClientError;

use super::run::{RunError, Vm};

#[derive(Clone, Copy, Debug)]
struct Thread {
    busy: bool,
    result: i64,
    event: i64,
    base: i64,
    prio: i64,
    mutex: [u8; LOCKS],
    blocked_on: Option<usize>,
    interruptible: bool,
}

impl Default for Thread {
    fn default() -> Self {
        Thread {
            busy: false,
            result: 0,
            event: 0,
            base: -21,
            prio: -21,
            mutex: [0; LOCKS],
            blocked_on: None,
            interruptible: false,
        }
    }
}

pub(crate) struct Fake {
    pub profile: Profile,
    pub vcpus: u32,
    /// The global event counter ("E").
    pub counter: i64,
    /// `cmd T NAME DATA` per posted command, `set-mode NAME` per switch asked.
    pub log: Vec<String>,
    /// A bug to find: a lock already held is granted again.
    pub grant_held_locks: bool,
    /// A bug to find: `reset` keeps the locks.
    pub ignore_reset: bool,
    /// Answer this many more requests, then the connection is closed.
    pub dead_after: Option<usize>,
    /// State reads that show a posted command busy before it takes effect.
    pub lag: u32,
    /// `x-locktest-state` requests answered.
    pub reads: usize,
    threads: [Thread; THREADS],
    owner: [Option<usize>; LOCKS],
    /// Posted commands, with the reads each still waits.
    pending: Vec<(usize, Opcode, i32, u32)>,
}

fn error(desc: String) -> Value {
    json!({"error": {"class": "GenericError", "desc": desc}})
}

impl Fake {
    pub fn new(profile: Profile, vcpus: u32) -> Self {
        Fake {
            profile,
            vcpus,
            counter: 0,
            log: Vec::new(),
            grant_held_locks: false,
            ignore_reset: false,
            dead_after: None,
            lag: 0,
            reads: 0,
            threads: [Thread::default(); THREADS],
            owner: [None; LOCKS],
            pending: Vec::new(),
        }
    }

    fn rt(&self) -> bool {
        self.profile.locks == LockMode::Rt
    }

    fn state(&mut self) -> Value {
        self.reads += 1;
        // In order: a command waits for the ones posted before it.
        let mut waiting = Vec::new();
        for (t, op, data, lag) in std::mem::take(&mut self.pending) {
            if lag > 0 || !waiting.is_empty() {
                waiting.push((t, op, data, lag.saturating_sub(1)));
            } else {
                self.apply(t, op, data);
            }
        }
        self.pending = waiting;
        let threads: Vec<Value> = self
            .threads
            .iter()
            .enumerate()
            .map(|(i, t)| {
                json!({"thread": i, "cpu": i as u32 % self.vcpus, "busy": t.busy, "opcode": t.result,
                       "event": t.event, "prio": t.prio, "normal_prio": t.base, "mutex": t.mutex,
                       "blocked_on": t.blocked_on})
            })
            .collect();
        json!({"locks": self.profile.locks.name(), "threads": threads})
    }

    fn transition(&mut self, t: usize) {
        self.counter += 1;
        self.threads[t].event = self.counter;
    }

    /// Whether the owner chain from `from` reaches `to`.
    fn chain_reaches(&self, mut from: usize, to: usize) -> bool {
        for _ in 0..THREADS {
            if from == to {
                return true;
            }
            match self.threads[from].blocked_on.and_then(|l| self.owner[l]) {
                Some(next) => from = next,
                None => return false,
            }
        }
        false
    }

    fn release(&mut self, l: usize) {
        if let Some(o) = self.owner[l].take() {
            self.threads[o].mutex[l] = 0;
        }
        let waiter = (0..THREADS)
            .filter(|&w| self.threads[w].blocked_on == Some(l))
            .max_by_key(|&w| (self.threads[w].prio, std::cmp::Reverse(w)));
        if let Some(w) = waiter {
            self.owner[l] = Some(w);
            let th = &mut self.threads[w];
            th.mutex[l] = 4;
            th.blocked_on = None;
            th.busy = false;
            th.result = 0;
            self.transition(w);
        }
    }

    fn recompute(&mut self) {
        for _ in 0..THREADS {
            for t in 0..THREADS {
                let mut p = self.threads[t].base;
                if self.rt() {
                    for l in (0..LOCKS).filter(|&l| self.owner[l] == Some(t)) {
                        for w in (0..THREADS).filter(|&w| self.threads[w].blocked_on == Some(l)) {
                            p = p.max(self.threads[w].prio);
                        }
                    }
                }
                self.threads[t].prio = p;
            }
        }
    }

    fn apply(&mut self, t: usize, op: Opcode, data: i32) {
        let mut result = 0;
        let mut done = true;
        match op {
            Opcode::SchedOther => self.threads[t].base = -21,
            Opcode::SchedFifo => self.threads[t].base = i64::from(data),
            Opcode::Lock | Opcode::LockNoWait | Opcode::LockInt | Opcode::LockIntNoWait => {
                let l = data as usize;
                match self.owner[l] {
                    Some(o) if !self.grant_held_locks => {
                        if self.rt() && self.chain_reaches(o, t) {
                            result = -35;
                        } else {
                            done = false;
                            let th = &mut self.threads[t];
                            th.result = i64::from(op as u32);
                            th.mutex[l] = 2;
                            th.blocked_on = Some(l);
                            th.interruptible = op.interruptible();
                        }
                    }
                    _ => {
                        self.owner[l] = Some(t);
                        self.threads[t].mutex[l] = 4;
                    }
                }
            }
            Opcode::Unlock => {
                let l = data as usize;
                if self.owner[l] == Some(t) {
                    self.release(l);
                } else {
                    result = -22;
                }
            }
            Opcode::Reset if !self.ignore_reset => {
                for l in 0..LOCKS {
                    if self.owner[l] == Some(t) {
                        self.release(l);
                    }
                }
                self.threads[t].base = -21;
            }
            _ => {}
        }
        if op == Opcode::ResetEvent {
            self.counter = 0;
            self.threads[t].event = 0;
        } else {
            self.transition(t);
        }
        if done {
            self.threads[t].busy = false;
            self.threads[t].result = result;
        }
        self.recompute();
    }

    fn signal(&mut self, t: usize) {
        let th = &mut self.threads[t];
        if let (Some(l), true) = (th.blocked_on, th.interruptible) {
            th.mutex[l] = 0;
            th.blocked_on = None;
            th.busy = false;
            th.result = -4;
            self.transition(t);
            self.recompute();
        }
    }

    fn command(&mut self, a: &Value) -> Value {
        let (Some(t), Some(Ok(op)), Some(data)) =
            (a["thread"].as_u64(), a["opcode"].as_str().map(Opcode::parse), a["data"].as_i64())
        else {
            return error(format!("bad arguments: {a}"));
        };
        self.log.push(format!("cmd {t} {} {data}", op.name()));
        let t = t as usize;
        if t >= THREADS {
            return error(format!("thread {t} is out of range 0..7"));
        }
        if op == Opcode::Signal {
            self.signal(t);
        } else if self.threads[t].busy {
            return error(format!(
                "thread {t} is still running its last command ({}); only signal may be sent to it now",
                self.threads[t].result
            ));
        } else {
            // As the real VMM: busy at once, "O" only when the thread picks
            // the command up.
            self.threads[t].busy = true;
            self.pending.push((t, op, data as i32, self.lag));
        }
        json!({"return": {}})
    }

    fn set_mode(&mut self, mode: &str) -> Value {
        self.log.push(format!("set-mode {mode}"));
        let Ok(to) = Profile::parse(mode) else { return error(format!("unknown profile {mode}")) };
        if to.locks != self.profile.locks
            && let Some(o) = self.owner.iter().flatten().next().copied()
        {
            let held: Vec<String> =
                (0..LOCKS).filter(|&l| self.owner[l] == Some(o)).map(|l| format!("'lt.{l}'")).collect();
            return error(format!(
                "switch to {mode} failed: while freezing: task 'locktest.{o}' holds {} switchable lock(s): {}",
                held.len(),
                held.join(", ")
            ));
        }
        let changed = to != self.profile;
        self.profile = to;
        json!({"return": {"changed": changed}})
    }
}

impl Vm for Fake {
    fn execute(&mut self, request: Value) -> Result<Value, RunError> {
        if let Some(n) = &mut self.dead_after {
            if *n == 0 {
                return Err(ClientError::Closed.into());
            }
            *n -= 1;
        }
        Ok(match request["execute"].as_str().unwrap_or("") {
            "x-locktest-state" => json!({"return": self.state()}),
            "x-locktest-command" => self.command(&request["arguments"]),
            "set-mode" => self.set_mode(request["arguments"]["mode"].as_str().unwrap_or("")),
            "query-mode" => json!({"return": {"mode": self.profile.name()}}),
            "quit" => json!({"return": {}}),
            other => error(format!("The command {other} has not been found")),
        })
    }
}

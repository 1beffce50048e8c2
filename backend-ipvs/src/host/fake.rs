//! [`FakeHost`]: records every command and answers from a script.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::sync::Mutex;

use super::{Command, Host, Output};

/// A host whose programs, `/proc/net` files and command answers are set by
/// the test, and which records every command it is asked to run.
///
/// A command is answered, in order, by the responses scripted for its exact
/// command line ([`FakeHost::respond`]); when none is left, by the default
/// of the longest matching prefix ([`FakeHost::default_for`]); otherwise it
/// succeeds with no output.
#[derive(Debug, Default)]
pub(crate) struct FakeHost {
    programs: BTreeSet<String>,
    proc_net: HashMap<String, String>,
    scripted: Mutex<HashMap<String, VecDeque<Output>>>,
    defaults: Vec<(String, Output)>,
    log: Mutex<Vec<String>>,
}

impl FakeHost {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Makes `programs` present in `PATH`.
    pub(crate) fn with_programs(mut self, programs: &[&str]) -> Self {
        self.programs.extend(programs.iter().map(|p| p.to_string()));
        self
    }

    /// Makes `/proc/net/<name>` hold `contents`.
    pub(crate) fn with_proc_net(mut self, name: &str, contents: &str) -> Self {
        self.proc_net.insert(name.to_string(), contents.to_string());
        self
    }

    /// Queues `output` as the next answer to the command line `line`.
    pub(crate) fn respond(self, line: &str, output: Output) -> Self {
        self.scripted
            .lock()
            .unwrap()
            .entry(line.to_string())
            .or_default()
            .push_back(output);
        self
    }

    /// Answers every unscripted command line starting with `prefix` with `output`.
    pub(crate) fn default_for(mut self, prefix: &str, output: Output) -> Self {
        self.defaults.push((prefix.to_string(), output));
        self
    }

    /// The command lines run so far, in order.
    pub(crate) fn commands(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// A successful answer printing `stdout`.
    pub(crate) fn ok(stdout: &str) -> Output {
        Output {
            code: Some(0),
            stdout: stdout.to_string(),
            stderr: String::new(),
        }
    }

    /// A failed answer with exit code `code` printing `stderr`.
    pub(crate) fn fail(code: i32, stderr: &str) -> Output {
        Output {
            code: Some(code),
            stdout: String::new(),
            stderr: stderr.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Host for FakeHost {
    async fn run(&self, command: &Command) -> io::Result<Output> {
        let line = command.to_string();
        self.log.lock().unwrap().push(line.clone());
        if !self.programs.contains(&command.program) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: not found", command.program),
            ));
        }
        if let Some(output) = self
            .scripted
            .lock()
            .unwrap()
            .get_mut(&line)
            .and_then(VecDeque::pop_front)
        {
            return Ok(output);
        }
        let default = self
            .defaults
            .iter()
            .filter(|(prefix, _)| line.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, output)| output.clone());
        Ok(default.unwrap_or_else(|| FakeHost::ok("")))
    }

    fn has_program(&self, program: &str) -> bool {
        self.programs.contains(program)
    }

    fn read_proc_net(&self, name: &str) -> io::Result<Option<String>> {
        Ok(self.proc_net.get(name).cloned())
    }
}

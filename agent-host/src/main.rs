//! `agent-host`: see the library's documentation (`agent_host`) and `agent-host --help`.

fn main() -> std::process::ExitCode {
    agent_host::main()
}

//! `dbagentctl`: the operator's client for the dbagent gRPC API. Everything lives in `dbagent::cli`.

fn main() -> std::process::ExitCode {
    dbagent::cli::main()
}

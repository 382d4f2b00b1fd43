//! The `motley` binary: wires the server, the agent and the CLI into subcommands.
#![deny(unsafe_code)] // the exceptions: `malloc`'s two calls into glibc's allocator

mod doctor;
mod local_link;
mod logging;
mod malloc;
mod roles;
mod up;

use clap::Parser;
use motley_cli::args::{Cli, Command};

/// Runs a long-running role as a task of the runtime rather than on the main thread,
/// and makes its future there, boxed. `block_on` polls a future on the main thread's
/// stack, and a stack keeps every page it ever touched: making the role's future on the
/// main thread and moving it into a task kept about 28 KiB more of that stack resident
/// (64 → 36 KiB measured on an idle agent), beside the workers' own stacks, which run
/// the same code afterwards. Free pages are given back while it runs
/// (`malloc::give_back_periodically`).
async fn role<T, F>(make: impl FnOnce() -> F + Send + 'static) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    tokio::spawn(malloc::give_back_periodically());
    tokio::spawn(async move { Box::pin(make()).await })
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the role's task ended: {e}")))
}

/// Parses the command line on a thread of its own, for the long-running roles. clap
/// builds every subcommand's description to parse one, with deep calls, and a stack
/// keeps the pages it touched: the main stack was 104 KiB when the runtime was built
/// after a parse on it, 24 KiB after a parse on a thread, whose stack is given back when
/// it ends (glibc discards the pages of an ended thread's stack). Its heap, about 385 KiB at the peak, is freed after the parse
/// (`malloc::give_back_free_pages`).
fn parse_aside() -> Cli {
    match std::thread::Builder::new()
        .name("motley-args".into())
        .spawn(Cli::parse)
        .map(std::thread::JoinHandle::join)
    {
        Ok(Ok(cli)) => cli,
        // Parsing panicked and has said why: parsing again would only panic again.
        Ok(Err(_)) => std::process::exit(motley_cli::EXIT_ERROR),
        // The thread could not start: parse here.
        Err(_) => Cli::parse(),
    }
}

/// Readiness events the runtime takes from the kernel at a time (see `main`).
const IO_EVENTS_PER_TICK: usize = 256;

fn main() {
    // The fence guard an agent starts (`motley_agent::guard`): before anything else, so
    // it stays small (no runtime, no logging setup). Not a user command.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "fence-guard")
    {
        std::process::exit(motley_agent::guard::run());
    }
    // An experiment's stress process (`motley_agent::chaos`): CORES BYTES MS. Not a
    // user command either.
    // Read as `OsString`s: a file name may be any bytes, and clap says what is wrong
    // with one that is not UTF-8 (`std::env::args` would panic on it here).
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(5).collect();
    if args.get(1).is_some_and(|a| a == "chaos-stress") {
        let num = |i: usize| {
            args.get(i)
                .and_then(|a| a.to_str())
                .and_then(|a| a.parse::<u64>().ok())
        };
        match (num(2), num(3), num(4)) {
            (Some(cores), Some(bytes), Some(ms)) => {
                motley_agent::chaos::stress_main(cores.min(1024) as u32, bytes, ms);
                std::process::exit(0);
            }
            _ => {
                eprintln!("usage: motley chaos-stress CORES BYTES MS");
                std::process::exit(motley_cli::EXIT_ERROR);
            }
        }
    }
    // Before any thread starts (the parse's own, the runtime's): for every command, not
    // only the guessed roles, so that a wrong guess below never leaves a server or agent
    // with an arena per thread. A client allocates on one thread: it changes nothing there.
    malloc::one_arena();
    let cli = if malloc::names_a_long_running_role(std::env::args_os()) {
        let cli = parse_aside();
        malloc::give_back_free_pages();
        cli
    } else {
        Cli::parse()
    };
    let is_up = matches!(
        cli.command,
        Command::Up(_) | Command::Server(_) | Command::Agent(_)
    );
    logging::init(if is_up { "info" } else { "warn" });
    motley_net::install_crypto_provider();
    let rt = if is_up || matches!(cli.command, Command::Snapshot { .. }) {
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        // A small footprint: two workers are plenty for a node agent and a home-lab server.
        // The IO driver's event buffer is allocated whole (12 bytes an event): 1,024 by
        // default, 12 KiB; 256 is 3 KiB, and events beyond them wait for the next turn.
        rt.worker_threads(2)
            .max_blocking_threads(8)
            .max_io_events_per_tick(IO_EVENTS_PER_TICK)
            .enable_all();
        rt.build()
    } else {
        // A client command makes a request or two: no worker threads to start (a shell
        // loop of `motley apply` spends most of its time starting processes).
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            std::process::exit(motley_cli::EXIT_ERROR);
        }
    };
    let config = cli.config.clone();
    let scope = motley_cli::client::Namespacing {
        namespace: cli.namespace.clone(),
        all: cli.all_namespaces,
    };
    let code = rt.block_on(async move {
        match cli.command {
            Command::Up(args) => role(move || up::run(args)).await.map(|()| 0),
            Command::Server(args) => role(move || roles::server(*args)).await.map(|()| 0),
            Command::Agent(args) => role(move || roles::agent(args)).await,
            Command::Doctor(args) => doctor::run(args, config.as_deref()).await,
            Command::Snapshot {
                command:
                    motley_cli::args::SnapshotCommand::Restore {
                        file,
                        data_dir,
                        datastore,
                        etcd,
                    },
            } => {
                roles::snapshot_restore(&file, data_dir.as_deref(), datastore.as_deref(), &etcd)
                    .await
            }
            other => motley_cli::commands::run(config.as_deref(), scope, other).await,
        }
    });
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(motley_cli::EXIT_ERROR);
        }
    }
}

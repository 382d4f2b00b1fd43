//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// motley: one binary that turns mismatched machines into one self-healing cluster.
#[derive(Debug, Parser)]
#[command(name = "motley", version, about, propagate_version = true)]
pub struct Cli {
    /// Client config file (default: $MOTLEY_CONFIG, then ~/.config/motley/config.yaml).
    #[arg(long, global = true, env = "MOTLEY_CONFIG")]
    pub config: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// More columns.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Manifest inputs.
#[derive(Debug, Args, Clone)]
pub struct FileArgs {
    /// A manifest file, a directory of them (*.yaml, *.yml), or - for standard input. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a single-node cluster (server and agent in one process, embedded store).
    Up(UpArgs),
    /// Create or update workloads from manifests (all or nothing).
    Apply {
        /// Inputs.
        #[command(flatten)]
        files: FileArgs,
        /// Validate against the cluster without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check manifests without a cluster.
    Validate {
        /// Inputs.
        #[command(flatten)]
        files: FileArgs,
    },
    /// List objects: nodes, services, jobs, daemons, allocs.
    Get {
        /// What to list.
        resource: String,
        /// One object by name (or id).
        name: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        /// Only allocations of this workload (KIND/NAME).
        #[arg(long)]
        workload: Option<String>,
    },
    /// Show one object in detail, with its allocations and reasons.
    Describe {
        /// KIND NAME, or KIND/NAME (node, service, job, daemon, alloc).
        target: Vec<String>,
    },
    /// Delete workloads: KIND/NAME, KIND NAME, or -f manifests.
    Delete {
        /// KIND/NAME or KIND NAME.
        target: Vec<String>,
        /// Delete what these manifests define.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
    },
    /// Print an allocation's output.
    Logs {
        /// Allocation id.
        alloc: String,
        /// Keep printing as the log grows, until the task ends.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Print client and server versions.
    Version,
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the JSON Schema of manifest documents (for editors).
    Schema,
}

/// `motley up`.
#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    /// Data directory (default: $XDG_DATA_HOME/motley, or ~/.local/share/motley).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: std::net::SocketAddr,
    /// Node name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Manifests to apply once the cluster is ready. Repeatable.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Extra DNS names or IPs for the server certificate. Repeatable.
    #[arg(long)]
    pub tls_san: Vec<String>,
}

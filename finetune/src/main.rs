mod cli;

use clap::{CommandFactory, FromArgMatches};

fn main() -> anyhow::Result<()> {
    // The matches travel on: `train --config` lets only the flags given override the file.
    let matches = cli::Cli::command().get_matches();
    cli::Cli::from_arg_matches(&matches)?.command.run(&matches)
}

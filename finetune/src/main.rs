mod cli;

use clap::{CommandFactory, FromArgMatches};

fn main() -> anyhow::Result<()> {
    // Before any thread starts: the trainer, not candle, spreads work over the cores.
    kvrec_finetune::train::threads::own_the_cores();
    // The matches travel on: `train --config` lets only the flags given override the file.
    let matches = cli::Cli::command().get_matches();
    cli::Cli::from_arg_matches(&matches)?.command.run(&matches)
}

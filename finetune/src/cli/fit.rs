use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgMatches, Args};
use kvrec_finetune::fit::{self, FitOptions, ItemText, Source};
use kvrec_finetune::protocol::{ProtocolConfig, TieOrder};

#[derive(Args)]
pub struct FitArgs {
    /// The recipe (TOML) over your tables: see `data --recipe`. It may carry a [train]
    /// table of training options.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    recipe: Option<PathBuf>,
    /// Or an unpacked MovieLens folder (ML-1M or ML-100K layout).
    #[arg(long)]
    from: Option<PathBuf>,
    /// The fit's folder: model.gguf, report.md, train.toml, data/ and run/.
    #[arg(long)]
    out: PathBuf,
    /// Wall-clock time for the whole fit, e.g. 90s, 30m, 1h30m; training keeps the best
    /// validation epoch within it.
    #[arg(long, default_value = "30m")]
    budget: String,
    /// Continue an interrupted fit in --out.
    #[arg(long)]
    resume: bool,
    /// Training options (TOML, e.g. an edited train.toml of an earlier fit) set over the
    /// ones fit derives from the data.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Users held out of training, on whom the report compares the model with the baselines.
    #[arg(long, default_value_t = ProtocolConfig::default().test_users)]
    test_users: usize,
    /// Order of events that share a time: file (the source's order) or movie-id.
    #[arg(long, value_enum, default_value_t = TieOrder::File)]
    tie_order: TieOrder,
    #[arg(long, default_value_t = ProtocolConfig::default().seed)]
    seed: u64,
    /// A GGUF language model that reads the item titles (default: the one
    /// scripts/fetch_gemma.sh fetched, if any).
    #[arg(long, conflicts_with = "no_item_text")]
    item_text_model: Option<PathBuf>,
    /// Do not read the item titles, even with a text model at hand.
    #[arg(long)]
    no_item_text: bool,
    /// CPU threads for reading the titles and scoring the model (default: all cores).
    #[arg(long)]
    threads: Option<u32>,
}

impl FitArgs {
    pub fn run(self, _given: &ArgMatches) -> Result<()> {
        let source = match (self.recipe, self.from) {
            (Some(recipe), _) => Source::Recipe(recipe),
            (None, Some(dir)) => Source::MovieLens(dir),
            (None, None) => anyhow::bail!("pass a recipe (TOML) or --from <MovieLens folder>"),
        };
        let options = FitOptions {
            source,
            out: self.out,
            budget: fit::parse_budget(&self.budget)?,
            resume: self.resume,
            config: self.config,
            protocol: ProtocolConfig {
                seed: self.seed,
                test_users: self.test_users,
                tie_order: self.tie_order,
                ..ProtocolConfig::default()
            },
            item_text: match (self.item_text_model, self.no_item_text) {
                (Some(path), _) => ItemText::Model(path),
                (None, true) => ItemText::Off,
                (None, false) => ItemText::Auto,
            },
            threads: self.threads,
            progress: true,
        };
        let fitted = fit::run(&options)?;
        println!("{}", fitted.summary);
        Ok(())
    }
}

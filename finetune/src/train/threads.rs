//! Who uses the cores while training. candle reads `RAYON_NUM_THREADS` before each matrix
//! product and, above 1, splits the product over rayon's pool; its other kernels run on the
//! calling thread. So one pass over a batch keeps about 1.4 of 2 cores busy, and two passes
//! side by side whose products also split over the same pool keep each other waiting.
//! kvrec-finetune parallelises over work of its own instead: a batch's shards
//! ([`super::TrainConfig::shards`]) and validation's chunks of requests, each pass on one
//! thread. On ML-1M's derived configuration (2 cores, tokens/s over 30 steps): unsharded with
//! candle's products on 2 threads 6,001; two shards with their products split too 5,142;
//! two shards with single-threaded products 8,518 and 8,730.

/// For a program about to train, before it starts any thread: builds rayon's global pool with
/// the threads asked for (`RAYON_NUM_THREADS`, else every core), then tells candle to run its
/// products on the thread that asks for them. Changing the environment is only sound while
/// no other thread reads it, hence the binary's first line and nowhere else; a library
/// caller keeps candle's threading and trains the same weights, only slower.
pub fn own_the_cores() {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| kvrec_llm::limits::cores() as usize);
    // Fails only if the pool is already built, and then it is already sized.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    std::env::set_var("RAYON_NUM_THREADS", "1");
}

/// Examples a shard keeps at least when `shards` is 0 (one per thread): fewer make the
/// matrix products too small to be worth a thread.
pub const MIN_SHARD_EXAMPLES: usize = 8;

/// The shards a step of `config` cuts its batch into.
pub fn shards(config: &super::TrainConfig) -> usize {
    match config.shards {
        0 => rayon::current_num_threads()
            .min(config.batch / MIN_SHARD_EXAMPLES)
            .max(1),
        n => n,
    }
}

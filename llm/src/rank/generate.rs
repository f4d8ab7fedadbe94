//! Ranking by generation: greedy decoding, the paper's way, and parsing the answer.

use kvrec_core::answer::parse_answer;
use kvrec_core::options::Options;
use kvrec_core::template::TemplateSpec;
use kvrec_core::{Request, Result};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::prompt::{batch_error, decode, decode_prompt, fit_prompt};
use super::Ranking;
use crate::cancel::Cancel;
use crate::limits;
use crate::model::Model;

pub(super) fn generate(
    model: &Model,
    request: &Request,
    spec: &TemplateSpec,
    options: &Options,
    cancel: &Cancel,
) -> Result<Ranking> {
    let answer = spec.render_answer(&request.candidate_ids());
    let max_new = model.tokenize(&answer, false).len() + 8;
    limits::get().check_generated_tokens(max_new)?;
    let (prompt, dropped) = fit_prompt(model, request, spec, max_new)?;
    let n_prompt = prompt.len();
    let vocab = model.llama().vocab();
    let generated = model.with_context_threads(model.threads_for(options), cancel, |ctx| {
        let mut logits = decode_prompt(ctx, &prompt, &[0], model.load.n_batch as usize, cancel)?;
        let mut tokens = Vec::new();
        let mut batch = LlamaBatch::new(1, 1);
        while tokens.len() < max_new {
            let next = LlamaToken(
                logits
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i as i32),
            );
            if vocab.is_eog(next) {
                break;
            }
            tokens.push(next);
            // Only the new token's text can hold the end of the line.
            let piece = vocab.detokenize(&[next], true, false);
            if piece.contains(&b'\n') {
                break;
            }
            batch.clear();
            batch
                .add(next, (n_prompt + tokens.len() - 1) as i32, &[0], true)
                .map_err(batch_error)?;
            decode(ctx, &mut batch, cancel)?;
            logits = ctx.get_logits_ith(0).to_vec();
        }
        Ok(String::from_utf8_lossy(&vocab.detokenize(&tokens, true, false)).into_owned())
    })?;
    let parsed = parse_answer(&generated, &request.candidate_ids());
    Ok(Ranking {
        ids: parsed.ids.clone(),
        scores: (0..parsed.ids.len()).map(|r| -(r as f64)).collect(),
        dropped_history: dropped,
        prompt_tokens: n_prompt,
        generated: Some(generated),
        parsed: Some(parsed),
    })
}

//! A training task: a model, its data and its loss. The run loop
//! ([`super::run`]) does the rest — optimizer, evaluation cadence, logs,
//! checkpoints — the same way for every task.

use serde_json::Value;

use qkv_tensor::{Rng, Tensor};

use crate::data::shuffle::Epochs;
use crate::error::{Error, Result};
use crate::nn::NamedParam;

/// The loss of one micro-batch.
pub struct Loss {
    /// The mean loss, a scalar whose graph reaches the parameters.
    pub value: Tensor,
    /// Tokens the batch fed the model (real tokens, not padding; image
    /// patches for a ViT), for tokens per second.
    pub tokens: usize,
}

/// A look at held-out data.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy on the held-out data (nats per predicted token, or
    /// per example for classifiers).
    pub loss: f32,
    /// Fraction predicted right, for tasks that predict classes or masked tokens.
    pub accuracy: Option<f64>,
    /// One line for people ("masked-token accuracy 0.412 (unigram 0.118)").
    pub summary: String,
}

/// What a task is to the run loop.
pub trait Task {
    /// The model's trainable parameters, under their checkpoint names.
    fn params(&self) -> Vec<NamedParam>;

    /// Draw the next training batch and compute its loss (with dropout).
    /// `None` when the batch has nothing to predict (an MLM batch where no
    /// token was chosen); the step then skips it.
    fn training_loss(&mut self) -> Result<Option<Loss>>;

    /// Score the held-out data (no gradients, no dropout). Must not change
    /// the task's state: a run evaluates when it likes.
    fn evaluate(&self) -> Result<Evaluation>;

    /// Where the task stands — its random stream and place in the data — as
    /// JSON, saved in every checkpoint.
    fn state(&self) -> Value;

    /// Go back to a saved [`Task::state`].
    fn restore(&mut self, state: &Value) -> Result<()>;

    /// The final numbers of a finished run (`report.json`), beside the last
    /// evaluation: what `qkv eval` would say, and baselines to compare with.
    fn report(&self) -> Result<Value>;

    /// Lines that describe the run when it starts: the model, its size, the data.
    fn describe(&self) -> Vec<String>;
}

/// The state of a task whose only state is its random stream.
pub fn rng_state(rng: &Rng) -> Value {
    serde_json::json!({ "rng": rng.state() })
}

/// The random stream of a saved [`rng_state`].
pub fn rng_of(state: &Value) -> Result<Rng> {
    let s: [u64; 4] = serde_json::from_value(state["rng"].clone())
        .map_err(|e| Error::Config(format!("a checkpoint's task state has no usable \"rng\": {e}")))?;
    Ok(Rng::from_state(s))
}

/// The state of a task that goes through its data in epochs: its random
/// stream and where it is in its passes.
pub fn epochs_state(rng: &Rng, epochs: &Epochs) -> Value {
    serde_json::json!({ "rng": rng.state(), "epochs": epochs })
}

/// The random stream and place in the data of a saved [`epochs_state`].
pub fn restore_epochs(state: &Value) -> Result<(Rng, Epochs)> {
    let epochs = serde_json::from_value(state["epochs"].clone())
        .map_err(|e| Error::Config(format!("a checkpoint's task state has no usable \"epochs\": {e}")))?;
    Ok((rng_of(state)?, epochs))
}

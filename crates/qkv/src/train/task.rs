//! A training task: a model, its data and its loss. The run loop
//! ([`super::run`]) does the rest — optimizer, evaluation cadence, logs,
//! checkpoints — the same way for every task.

use serde_json::Value;

use qkv_tensor::Tensor;

use crate::error::Result;
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

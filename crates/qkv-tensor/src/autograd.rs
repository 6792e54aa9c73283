//! Reverse-mode automatic differentiation.
//!
//! During the forward pass every op whose inputs need gradients records, on its
//! output, the inputs and a closure that turns the output's gradient into the
//! inputs' gradients. These records form the tape. `loss.backward()` replays it
//! backwards: tensors are numbered in creation order, so visiting them from the
//! highest number down meets every tensor after all the ops that used it.
//!
//! Parameters ([`Param`]) are the leaves that live across steps: their
//! gradients are *added* into a slot, so several backward passes accumulate
//! (gradient accumulation) until [`Param::zero_grad`].
//!
//! [`no_grad`] turns recording off, for evaluation and generation: nothing is
//! kept for a backward pass, so activations are freed as soon as they are used.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub(crate) type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// How a tensor takes part in differentiation.
pub(crate) enum GradKind {
    /// A constant (input data, or anything computed under `no_grad`).
    None,
    /// Computed by an op from inputs that need gradients.
    Op(Node),
    /// A parameter: gradients accumulate into its slot.
    Param(Arc<GradSlot>),
}

/// One entry of the tape. Taken (and so freed) when backward runs.
pub(crate) struct Node(Mutex<Option<(Vec<Tensor>, BackwardFn)>>);

impl Node {
    pub(crate) fn new(inputs: Vec<Tensor>, f: BackwardFn) -> Node {
        Node(Mutex::new(Some((inputs, f))))
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Run `f` without recording anything for backward.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Turns recording off until dropped (restores the previous state).
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { previous }
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// The accumulated gradient of one parameter (row-major, its shape).
#[derive(Default)]
pub struct GradSlot(Mutex<Option<Vec<f32>>>);

impl GradSlot {
    fn add(&self, g: Tensor) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            None => *slot = Some(g.into_vec()),
            Some(acc) => crate::kernels::elementwise::add_assign(acc, &g.data()),
        }
    }
}

impl Tensor {
    pub fn requires_grad(&self) -> bool {
        !matches!(self.0.grad, GradKind::None)
    }

    /// Backpropagate from this scalar: adds d(self)/d(p) into every parameter
    /// `p` it depends on. Frees the graph as it goes, like PyTorch's default.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::Backward(format!("can only start from a scalar loss, got shape {:?}", self.shape())));
        }
        self.backward_with(&Tensor::ones(self.shape()))
    }

    /// Backpropagate with a given output gradient (same shape as `self`).
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        if grad.shape() != self.shape() {
            return Err(Error::mismatch(
                "backward",
                self.shape(),
                grad.shape(),
                "the output gradient must have the output's shape",
            ));
        }
        if !self.requires_grad() {
            return Err(Error::Backward(
                "this tensor does not depend on any parameter (or was computed under no_grad)".into(),
            ));
        }
        // Collect the tape: every recorded op reachable from self.
        let mut order: Vec<Tensor> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![self.clone()];
        while let Some(t) = stack.pop() {
            if !seen.insert(t.id()) {
                continue;
            }
            if let GradKind::Op(node) = &t.0.grad {
                let guard = node.0.lock().unwrap_or_else(|e| e.into_inner());
                match guard.as_ref() {
                    Some((inputs, _)) => stack.extend(inputs.iter().filter(|i| i.requires_grad()).cloned()),
                    None => {
                        return Err(Error::Backward(
                            "the graph was already freed by an earlier backward(); run the forward pass again".into(),
                        ));
                    }
                }
            }
            order.push(t);
        }
        order.sort_by_key(|t| std::cmp::Reverse(t.id()));

        let _no_grad = NoGradGuard::new();
        let mut grads: HashMap<u64, Tensor> = HashMap::new();
        grads.insert(self.id(), grad.clone());
        for t in order {
            let Some(g) = grads.remove(&t.id()) else {
                continue;
            };
            match &t.0.grad {
                GradKind::None => {}
                GradKind::Param(slot) => slot.add(g),
                GradKind::Op(node) => {
                    let taken = node.0.lock().unwrap_or_else(|e| e.into_inner()).take();
                    let Some((inputs, f)) = taken else { continue };
                    let input_grads = f(&g)?;
                    debug_assert_eq!(input_grads.len(), inputs.len());
                    for (input, ig) in inputs.iter().zip(input_grads) {
                        let Some(ig) = ig else { continue };
                        if ig.shape() != input.shape() {
                            return Err(Error::Backward(format!(
                                "internal: gradient of shape {:?} for an input of shape {:?}",
                                ig.shape(),
                                input.shape()
                            )));
                        }
                        match &input.0.grad {
                            GradKind::None => {}
                            // Parameters take their gradient right away.
                            GradKind::Param(slot) => slot.add(ig),
                            GradKind::Op(_) => match grads.remove(&input.id()) {
                                None => {
                                    grads.insert(input.id(), ig);
                                }
                                Some(prev) => {
                                    grads.insert(input.id(), accumulate(prev, ig)?);
                                }
                            },
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// `a + b` for two gradients of one tensor, in place in `a`'s buffer when
/// nobody else holds it (`make_mut` copies otherwise).
fn accumulate(mut a: Tensor, b: Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return a.add(&b);
    }
    let bd = b.data();
    crate::kernels::elementwise::add_assign(a.make_mut(), &bd);
    drop(bd);
    Ok(a)
}

/// A trainable tensor that lives across steps: its current value, and the
/// gradient accumulated by `backward()` since the last `zero_grad()`.
#[derive(Clone)]
pub struct Param(Arc<ParamInner>);

struct ParamInner {
    value: RwLock<Tensor>,
    slot: Arc<GradSlot>,
}

impl Param {
    pub fn new(value: Tensor) -> Param {
        let slot = Arc::new(GradSlot::default());
        let value = Tensor::from_parts(value.0.storage.clone(), value.0.layout.clone(), GradKind::Param(slot.clone()));
        Param(Arc::new(ParamInner { value: RwLock::new(value), slot }))
    }

    /// The current value, as a leaf of the graph (gradients flow into this param).
    pub fn value(&self) -> Tensor {
        self.0.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn shape(&self) -> Vec<usize> {
        self.value().shape().to_vec()
    }

    pub fn numel(&self) -> usize {
        self.value().numel()
    }

    /// The accumulated gradient, if any backward pass reached this parameter.
    pub fn grad(&self) -> Option<Tensor> {
        let slot = self.0.slot.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()
            .map(|g| Tensor::from_vec(g.clone(), self.value().shape()).expect("slot matches the value's shape"))
    }

    /// Visit the accumulated gradient without copying it.
    pub fn with_grad<R>(&self, f: impl FnOnce(Option<&[f32]>) -> R) -> R {
        let slot = self.0.slot.0.lock().unwrap_or_else(|e| e.into_inner());
        f(slot.as_deref())
    }

    /// Scale the accumulated gradient in place (gradient clipping).
    pub fn scale_grad(&self, factor: f32) {
        let mut slot = self.0.slot.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = slot.as_mut() {
            g.iter_mut().for_each(|x| *x *= factor);
        }
    }

    /// Replace the accumulated gradient (e.g. when restoring a checkpoint).
    pub fn set_grad(&self, g: Option<Vec<f32>>) -> Result<()> {
        if let Some(g) = &g
            && g.len() != self.numel()
        {
            return Err(Error::invalid(
                "set_grad",
                format!("{} values for a parameter of {} values", g.len(), self.numel()),
            ));
        }
        *self.0.slot.0.lock().unwrap_or_else(|e| e.into_inner()) = g;
        Ok(())
    }

    pub fn zero_grad(&self) {
        *self.0.slot.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Change the value in place: `f(value, grad)`. The buffer is updated
    /// directly when this param is its only holder (the usual case once
    /// backward has freed the graph); otherwise it is copied first, so views
    /// taken earlier keep the old numbers. Either way the value's buffer
    /// carries no inference copies afterwards ([`crate::copies`]).
    pub fn update(&self, f: impl FnOnce(&mut [f32], Option<&[f32]>)) {
        let mut value = self.0.value.write().unwrap_or_else(|e| e.into_inner());
        let slot = self.0.slot.0.lock().unwrap_or_else(|e| e.into_inner());
        let contiguous_owned = value.is_contiguous() && value.layout().offset() == 0;
        let inner = Arc::get_mut(&mut value.0);
        if contiguous_owned
            && let Some(inner) = inner
            && let Some(storage) = Arc::get_mut(&mut inner.storage)
            && let Some(buf) = storage.as_mut_slice()
            && buf.len() == inner.layout.numel()
        {
            f(buf, slot.as_deref());
            return;
        }
        let mut data = value.to_vec();
        f(&mut data, slot.as_deref());
        let shape = value.shape().to_vec();
        *value = Tensor::from_parts(
            Arc::new(crate::storage::Storage::owned(data)),
            crate::layout::Layout::contiguous(&shape),
            GradKind::Param(self.0.slot.clone()),
        );
    }

    /// Replace the value (same shape), e.g. when loading a checkpoint.
    pub fn set_value(&self, t: &Tensor) -> Result<()> {
        let mut value = self.0.value.write().unwrap_or_else(|e| e.into_inner());
        if t.shape() != value.shape() {
            return Err(Error::mismatch("Param::set_value", value.shape(), t.shape(), "a parameter keeps its shape"));
        }
        *value = Tensor::from_parts(t.0.storage.clone(), t.0.layout.clone(), GradKind::Param(self.0.slot.clone()));
        Ok(())
    }
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param{:?}", self.shape())
    }
}

//! Bad arguments at the engine's public boundary are errors that name the op
//! and the shapes involved — never panics.

use qkv_tensor::{AttentionOpts, Tensor};

fn msg<T: std::fmt::Debug>(r: qkv_tensor::Result<T>) -> String {
    r.expect_err("should be an error").to_string()
}

fn has_all(m: &str, parts: &[&str]) {
    for p in parts {
        assert!(m.contains(p), "{m:?} should mention {p:?}");
    }
}

#[test]
fn shape_errors_name_the_op_and_both_shapes() {
    let a = Tensor::zeros(&[2, 3]);
    let b = Tensor::zeros(&[4, 5]);
    has_all(&msg(a.add(&b)), &["add", "[2, 3]", "[4, 5]"]);
    has_all(&msg(a.mul(&Tensor::zeros(&[2]))), &["mul", "[2, 3]", "[2]"]);
    has_all(&msg(a.matmul(&b)), &["matmul", "[2, 3]", "[4, 5]"]);
    has_all(&msg(a.reshape(&[5])), &["reshape", "[2, 3]", "[5]"]);
    has_all(&msg(Tensor::concat(&[&a, &b], 0)), &["concat", "[2, 3]", "[4, 5]"]);
    has_all(&msg(Tensor::from_vec(vec![1.0; 5], &[2, 3])), &["from_vec", "[2, 3]"]);
    has_all(&msg(a.sum(2, false)), &["sum", "axis 2", "rank 2"]);
}

#[test]
fn layer_arguments_are_checked_before_any_kernel_runs() {
    let x = Tensor::zeros(&[2, 4, 8]);
    has_all(&msg(qkv_tensor::layer_norm(&x, &Tensor::ones(&[7]), None, 1e-5)), &["layer_norm", "[7]"]);
    has_all(&msg(qkv_tensor::rms_norm(&x, &Tensor::ones(&[8, 1]), 1e-5)), &["rms_norm", "[8, 1]"]);
    let table = Tensor::zeros(&[10, 4]);
    has_all(&msg(qkv_tensor::embedding(&table, &[1, 10], &[2])), &["embedding", "id 10", "10 rows"]);
    has_all(&msg(qkv_tensor::embedding(&table, &[1, 2, 3], &[2])), &["embedding", "[2]"]);
    let logits = Tensor::zeros(&[3, 5]);
    has_all(&msg(qkv_tensor::cross_entropy(&logits, &[0, 5, 1], None)), &["cross_entropy", "target 5", "5 classes"]);
    has_all(&msg(qkv_tensor::cross_entropy(&logits, &[0, 1], None)), &["cross_entropy", "2 targets", "3 rows"]);
    has_all(&msg(qkv_tensor::dropout(&x, 1.0, 0)), &["dropout", "[0, 1)"]);
}

#[test]
fn attention_checks_heads_masks_and_slopes() {
    let q = Tensor::zeros(&[1, 2, 3, 4]);
    let k = Tensor::zeros(&[1, 2, 5, 4]);
    let opts = AttentionOpts::causal();
    has_all(
        &msg(qkv_tensor::attention(&q, &Tensor::zeros(&[1, 3, 5, 4]), &k, &opts)),
        &["attention", "[1, 2, 3, 4]", "[1, 3, 5, 4]"],
    );
    has_all(&msg(qkv_tensor::attention(&q, &k, &Tensor::zeros(&[1, 2, 5, 3]), &opts)), &["attention", "[1, 2, 5, 3]"]);
    has_all(&msg(qkv_tensor::attention(&Tensor::zeros(&[2, 3, 4]), &k, &k, &opts)), &["attention", "[2, 3, 4]"]);
    let bad_mask = AttentionOpts { key_mask: Some(vec![true; 4]), ..Default::default() };
    has_all(&msg(qkv_tensor::attention(&q, &k, &k, &bad_mask)), &["key mask", "4 flags", "5"]);
    let bad_alibi = AttentionOpts { alibi: Some(vec![0.5]), ..Default::default() };
    has_all(&msg(qkv_tensor::attention(&q, &k, &k, &bad_alibi)), &["ALiBi", "2 heads"]);
    has_all(&msg(qkv_tensor::attention_qkv(&Tensor::zeros(&[1, 3, 12]), 5, &opts)), &["attention_qkv", "5 heads"]);
}

#[test]
fn backward_refuses_what_it_cannot_do() {
    let x = Tensor::ones(&[2]);
    has_all(&msg(x.backward()), &["scalar"]);
    has_all(&msg(Tensor::scalar(1.0).backward()), &["does not depend on any parameter"]);
}

//! The comparison every golden test uses fails on NaN and infinity: an
//! output of NaNs is not "close" to its reference.

mod common;
use common::assert_close;
use qkv_tensor::Tensor;

fn t(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

#[test]
fn close_values_pass() {
    assert_close("close", &t(&[1.0, 2.0]), &t(&[1.0, 2.0 + 1e-7]), 1e-5);
}

#[test]
#[should_panic(expected = "worst relative difference NaN")]
fn an_output_of_nans_is_not_close() {
    assert_close("nan", &t(&[f32::NAN, f32::NAN]), &t(&[1.0, 2.0]), 1e-5);
}

#[test]
#[should_panic(expected = "worst relative difference NaN")]
fn one_nan_among_good_values_is_not_close() {
    assert_close("one nan", &t(&[1.0, f32::NAN, 3.0]), &t(&[1.0, 2.0, 3.0]), 1e-5);
}

#[test]
#[should_panic(expected = "worst relative difference inf")]
fn an_infinity_is_not_close() {
    assert_close("inf", &t(&[1.0, f32::INFINITY]), &t(&[1.0, 2.0]), 1e-5);
}

//! Create a cache, append a few tokens, compress, read a view.
use librkv::{Append, Cache, Layout, Method, Params, Stream, Tensor};

fn main() -> Result<(), librkv::Error> {
    let (heads, tokens, dim) = (2, 12, 16);
    let params = Params::new(1, 1, heads, heads, dim).method(Method::Rkv).budget(8).buffer(4).window(2);
    let mut cache = Cache::new(&params)?;

    // 12 prompt tokens in transformers' layout [seq, head, token, dim]
    let data: Vec<f32> = (0..heads * tokens * dim).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
    let layout = Layout::Bhtd { tokens: tokens as i64 };
    let t = |x| Tensor::host(x, heads, dim, layout);
    let mut args = Append::new(0, &[0], t(&data), t(&data), Some(t(&data)));
    args.num_tokens = Some(&[12]);
    args.prompt = true;
    cache.append(&args, Stream::DEFAULT)?;

    cache.compress(0, 0, Stream::DEFAULT)?; // 12 held > budget 8: keep 8 per head
    let view = cache.view(0, 0)?;
    println!("held {} of {} tokens", view.len(), view.logical_len());
    println!("positions kept by head 0: {:?}", view.positions(0)?);
    println!("K of head 0: {} floats", view.keys::<f32>(0)?.len());
    Ok(())
}

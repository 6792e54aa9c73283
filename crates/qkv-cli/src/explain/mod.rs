//! `qkv explain`: a local web page that follows a prompt through a model.
//!
//! The page (`page/`: HTML, script and styles, compiled into the binary: no
//! CDN, works offline) asks this server for numbers and draws them; every
//! number comes from `qkv::explain`, the same code that trains and generates.
//!
//! Routes:
//!
//! | route | answer |
//! |---|---|
//! | `GET /` `/app.js` `/style.css` | the page |
//! | `GET /api/model` | the model's shape, its positional embeddings |
//! | `GET /api/walk?text=…&temperature=…&top_k=…&top_p=…` | the text through the model |
//! | `GET /api/sample?text=…&seed=…` (+ the sampling controls) | one sampled next token |
//! | `POST /api/image` (the image file as the body) | an image through a ViT |
//! | `GET /api/cost` | time and memory of the naive and tiled attention kernels |
//!
//! Limits, so that a page left open or a script cannot take the machine:
//! prompts of at most [`MAX_PROMPT_CHARS`] characters, bodies of at most
//! [`MAX_BODY_BYTES`], and at most [`MAX_WAITING`] requests waiting for the
//! model (one runs at a time): past that the answer is 503 "busy", at once.

mod query;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow};
use clap::Args;
use serde_json::json;
use tiny_http::{Header, Method, Request, Response, Server};

use qkv::data::images::image_from_bytes;
use qkv::explain;
use qkv::models::load::{Model, open};
use query::Query;

/// Longest prompt the page may send, in characters.
pub const MAX_PROMPT_CHARS: usize = 4000;
/// Largest request body (an uploaded image), in bytes.
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// Requests that may wait for the model; more are told the server is busy.
pub const MAX_WAITING: usize = 16;
/// Candidates of a distribution sent to the page.
const TOP: usize = 20;

#[derive(Args, Debug)]
#[command(after_help = "Then open the address it prints in a browser. The page shows, for the prompt you type:
the tokens; the token and position embeddings; every layer's attention, head by head (hover
a token to see what it reads); what the attention and the MLP add to each token's vector,
and its length layer by layer; and the next-token distribution, with temperature, top-k and
top-p controls and a button that samples a token and appends it. For a BERT, the
distribution at each [MASK]; for a ViT, the patches and the class of an image you upload.
A second view shows the cost of attention (the naive kernel against the tiled one) and the
positional embeddings.

Examples:
  qkv explain --model runs/gpt
  qkv explain --model gpt2 --port 8080")]
pub struct ExplainArgs {
    /// A model directory: a qkv GPT or BERT or ViT run, or a Hugging Face GPT-2, BERT or ViT
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Port to listen on (0: any free port)
    #[arg(long, default_value_t = 7878)]
    pub port: u16,
    /// Address to bind: loopback unless you mean to share the page
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
}

/// The page's files, compiled in.
const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// What a worker computes for a request that waited in the queue.
struct Job {
    request: Request,
    route: Route,
}

enum Route {
    Walk(Query),
    Sample(Query),
    Image(Vec<u8>),
    Cost,
}

pub fn run(args: &ExplainArgs) -> Result<()> {
    let model = open(&args.model)?;
    let info = explain::model_info(&model)?;
    let info_json = serde_json::to_string(&info)?;
    let server = Server::http(SocketAddr::new(args.host, args.port))
        .map_err(|e| anyhow!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let addr = server.server_addr().to_ip().ok_or_else(|| anyhow!("the server has no IP address"))?;
    // the line tests and scripts read to find the page
    println!("qkv explain: {} ({} parameters) at http://{addr}/", info.describe, info.parameters);
    eprintln!("open that address in a browser; Ctrl-C stops the server");
    let (jobs, queue) = sync_channel::<Job>(MAX_WAITING);
    let model = Arc::new(model);
    let queue = Arc::new(Mutex::new(queue));
    // one computing worker: the kernels already use every core for one request
    let worker = {
        let (model, queue) = (Arc::clone(&model), Arc::clone(&queue));
        std::thread::spawn(move || work(&model, &queue))
    };
    let server = Arc::new(server);
    // a few threads read requests and answer the cheap ones themselves
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (server, jobs, info_json) = (Arc::clone(&server), jobs.clone(), info_json.clone());
            std::thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    route(request, &jobs, &info_json);
                }
            })
        })
        .collect();
    drop(jobs);
    for r in readers {
        let _ = r.join();
    }
    let _ = worker.join();
    Ok(())
}

/// Answer `request` at once, or queue it for the worker.
fn route(mut request: Request, jobs: &SyncSender<Job>, info_json: &str) {
    let url = request.url().to_string();
    let (path, raw_query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().clone();
    let route = match (&method, path) {
        (Method::Get, "/" | "/index.html") => return send(request, 200, "text/html; charset=utf-8", INDEX),
        (Method::Get, "/app.js") => return send(request, 200, "text/javascript; charset=utf-8", SCRIPT),
        (Method::Get, "/style.css") => return send(request, 200, "text/css; charset=utf-8", STYLE),
        (Method::Get, "/api/model") => return send(request, 200, "application/json", info_json),
        (Method::Get, "/api/walk") => match Query::parse(raw_query, MAX_PROMPT_CHARS) {
            Ok(q) => Route::Walk(q),
            Err(e) => return error(request, 400, &e),
        },
        (Method::Get, "/api/sample") => match Query::parse(raw_query, MAX_PROMPT_CHARS) {
            Ok(q) => Route::Sample(q),
            Err(e) => return error(request, 400, &e),
        },
        (Method::Get, "/api/cost") => Route::Cost,
        (Method::Post, "/api/image") => match read_body(&mut request) {
            Ok(body) => Route::Image(body),
            Err((status, e)) => return error(request, status, &e),
        },
        (
            _,
            "/" | "/index.html" | "/app.js" | "/style.css" | "/api/model" | "/api/walk" | "/api/sample" | "/api/cost"
            | "/api/image",
        ) => {
            return error(request, 405, &format!("{method} is not answered at {path}"));
        }
        _ => return error(request, 404, &format!("nothing at {path}")),
    };
    match jobs.try_send(Job { request, route }) {
        Ok(()) => {}
        Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => error(
            job.request,
            503,
            &format!("busy: {MAX_WAITING} requests are already waiting for the model; try again in a moment"),
        ),
    }
}

/// The body of a POST, at most [`MAX_BODY_BYTES`].
fn read_body(request: &mut Request) -> std::result::Result<Vec<u8>, (u16, String)> {
    let too_big = || (413, format!("the body is larger than the {} MiB the server takes", MAX_BODY_BYTES >> 20));
    if request.body_length().is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| (400, format!("cannot read the body: {e}")))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(too_big());
    }
    Ok(body)
}

/// The worker: one job at a time, in arrival order.
fn work(model: &Model, queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = match queue.lock().map(|q| q.recv()) {
            Ok(Ok(job)) => job,
            _ => return,
        };
        let answer = qkv_tensor::in_pool(|| compute(model, job.route));
        match answer {
            Ok(body) => send(job.request, 200, "application/json", &body),
            Err(e) => error(job.request, 422, &e.to_string()),
        }
    }
}

fn compute(model: &Model, route: Route) -> Result<String> {
    Ok(match route {
        Route::Walk(q) => {
            let walk = explain::walk_text(model, &q.text, &q.sampling, TOP)?;
            serde_json::to_string(&walk)?
        }
        Route::Sample(q) => {
            let (token, text) = explain::sample_next(model, &q.text, &q.sampling)?;
            json!({"token": token, "text": text}).to_string()
        }
        Route::Image(bytes) => {
            let Model::ImageClassifier { model: vit, labels } = model else {
                return Err(anyhow!("this model reads text, not images"));
            };
            let c = &vit.config;
            let pixels = image_from_bytes(&bytes, c.num_channels, c.image_size)?;
            serde_json::to_string(&explain::walk_image(vit, labels, &pixels)?)?
        }
        Route::Cost => {
            let points = explain::attention_cost(&[64, 128, 256, 512, 1024, 2048], 4, 2)?;
            json!({"heads": 4, "head_width": 64, "causal": true, "points": points}).to_string()
        }
    })
}

fn send(request: Request, status: u16, content_type: &str, body: &str) {
    let header = Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()).expect("a valid header");
    let nosniff = Header::from_bytes(&b"X-Content-Type-Options"[..], &b"nosniff"[..]).expect("a valid header");
    let response = Response::from_string(body).with_status_code(status).with_header(header).with_header(nosniff);
    // a client that went away is not the server's problem
    let _ = request.respond(response);
}

/// An error as JSON `{"error": "…"}`, which the page shows as it is.
fn error(request: Request, status: u16, message: &str) {
    send(request, status, "application/json", &json!({ "error": message }).to_string());
}

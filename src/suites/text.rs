//! Realistic text end to end: the cases the smoke, streaming and ledger suites run once per
//! charset, on the first OpenAI-compatible chat group the simulator serves (the simulator
//! replies in a charset a request asks for with `sim_charset`, which LiteLLM passes on).
//! - `smoke::charset::<charset>`: a plain reply reaches the client byte for byte as the
//!   simulator sent it (the journal keeps its FNV-1a), with the provider's usage
//! - `streaming::charset::<charset>`: the same for a stream, whatever the router's re-chunking
//!   does to multi-byte characters; no U+FFFD anywhere
//! - `ledger::charset::<charset>`: client, upstream and the router's log agree on tokens and
//!   cost for a non-ASCII request and reply
//! - `ledger::recount::<charset>`: the upstream stream carries no usage (`sim_usage.omit`), so
//!   the router counts the tokens itself; they must equal what the tokenizer LiteLLM picks for
//!   the group (`config::recount`) counts — exactly (tolerance 0 tokens: same tokenizer, same
//!   chat accounting), and the logged cost must be that count at the table's price. What the
//!   provider's own tokenizer counted is reported beside it: a router recounting with another
//!   tokenizer than the provider bills differently, which a team should know, not a failure.

use serde_json::{Value, json};

use super::ledger::{FLUSH, bill_with, body as ledger_body, group_price_gate, reconciled};
use super::support::{SINGLE_RPM, served_call};
use crate::client::shape;
use crate::config::RouterConfig;
use crate::config::pricing::Tokens;
use crate::config::provider::{Mode, Provider};
use crate::config::recount::{self, Encoding, OpenAiModels, Recount};
use crate::ledger::payload::LoggingPayload;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::sim::{Charset, JournalEntry, Tokenizer, fnv};
use crate::stack::role::Role;
use crate::tag::Tag;

/// A prompt in each charset (the reply's charset is the simulator's; the prompt's is the
/// request path's test).
fn prompt(cs: Charset) -> &'static str {
    match cs {
        Charset::Ascii => "route this request please",
        Charset::Cjk => "请把这个请求路由到最快的模型。ありがとう",
        Charset::Emoji => "route 🚦 this 👩🏽‍💻 request 🇯🇵 1️⃣",
        Charset::Rtl => "مرحبا بالعالم שלום עולם",
        Charset::Combining => "Xin cha\u{300}o the\u{302}\u{301} gio\u{31b}\u{301}i",
    }
}

/// The group the cases ask: chat, every deployment an OpenAI-compatible simulator deployment
/// (LiteLLM passes `sim_charset` and `sim_usage` on to those; the simulator's Anthropic
/// dialect takes `sim_charset` too, but not `sim_usage`), usable for a few requests.
pub(crate) fn text_group(cfg: &RouterConfig, priced: bool) -> Result<String, String> {
    cfg.groups()
        .into_iter()
        .find(|g| {
            let deps = cfg.deployments_of(g);
            cfg.mode_of(g) == Mode::Chat
                && !deps.is_empty()
                && deps.iter().all(|d| {
                    d.sim.is_some() && matches!(d.provider, Provider::OpenAi | Provider::Azure | Provider::HostedVllm)
                })
                && cfg.unusable(g, SINGLE_RPM).is_none()
                && (!priced || group_price_gate(cfg, g).is_none())
        })
        .ok_or_else(|| {
            format!(
                "no chat group whose every deployment is an OpenAI-compatible simulator deployment{}: \
                 the charset cases ask only those (the recount needs sim_usage, which only the \
                 OpenAI dialect takes)",
                if priced { " with a price" } else { "" }
            )
        })
}

pub fn cases(plan: &Plan) -> Vec<Case> {
    let cfg = &plan.config;
    let mut out = Vec::new();
    let group = text_group(cfg, false);
    for cs in Charset::NON_ASCII {
        let g = group.clone();
        out.push(gated(
            Case::new(format!("smoke::charset::{}", cs.name()), move |c| {
                plain(c, g.clone().unwrap_or_default(), cs)
            }),
            &group,
        ));
        let g = group.clone();
        out.push(gated(
            Case::new(format!("streaming::charset::{}", cs.name()), move |c| {
                streamed(c, g.clone().unwrap_or_default(), cs)
            }),
            &group,
        ));
    }
    if cfg.has_generic_logger {
        let priced = text_group(cfg, true);
        // The pinned LiteLLM's own list, when it is installed here (never installed for this).
        let openai = crate::stack::litellm::installed().and_then(|b| OpenAiModels::from_install(&b).ok());
        let rule = priced
            .as_ref()
            .map(|g| recount::litellm_recount(g, openai.as_ref()))
            .unwrap_or(Recount::Unknown(String::new()));
        for cs in Charset::NON_ASCII {
            let g = priced.clone();
            out.push(
                gated(
                    Case::new(format!("ledger::charset::{}", cs.name()), move |c| {
                        billed(c, g.clone().unwrap_or_default(), cs)
                    }),
                    &priced,
                )
                .needs(&[Role::LedgerSink]),
            );
        }
        for cs in Charset::ALL {
            let g = priced.clone();
            let r = rule.clone();
            let mut case = gated(
                Case::new(format!("ledger::recount::{}", cs.name()), move |c| {
                    recounted(c, g.clone().unwrap_or_default(), cs, r.clone())
                }),
                &priced,
            )
            .needs(&[Role::LedgerSink]);
            if let (Ok(_), Recount::Unknown(why)) = (&priced, &rule) {
                case = case.ignore(why.clone());
            }
            out.push(case);
        }
    }
    out.into_iter().map(|c| c.needs(&[Role::Simulator])).collect()
}

fn gated(case: Case, group: &Result<String, String>) -> Case {
    match group {
        Ok(g) => case.uses(&[g]),
        Err(why) => case.ignore(why.clone()),
    }
}

/// What the client got is what the simulator sent, byte for byte, and in the charset asked.
fn same_bytes(content: &str, e: &JournalEntry, cs: Charset) -> anyhow::Result<()> {
    let got = format!("{:016x}", fnv(&[content.as_bytes()]));
    anyhow::ensure!(
        got == e.reply_fnv,
        "the client's {} bytes are not the {} reply the simulator sent (FNV-1a {got} vs {}): {:?}",
        content.len(),
        e.deployment,
        e.reply_fnv,
        crate::client::excerpt(content)
    );
    anyhow::ensure!(
        !content.contains('\u{fffd}'),
        "the reply holds U+FFFD (a character broken on the way): {:?}",
        crate::client::excerpt(content)
    );
    anyhow::ensure!(
        cs == Charset::Ascii || !content.is_ascii(),
        "asked for {} text, the simulator's reply is plain ASCII: was sim_charset dropped on the way? {:?}",
        cs.name(),
        crate::client::excerpt(content)
    );
    Ok(())
}

fn chat(c: &Ctx, group: &str, cs: Charset) -> Value {
    let mut b = c.chat_body(group, c.tag(), &format!("{} {}", c.tag().marker(), prompt(cs)));
    b["sim_charset"] = json!(cs.name());
    b
}

async fn plain(c: Ctx, group: String, cs: Charset) -> anyhow::Result<()> {
    let r = c.router.chat(&chat(&c, &group, cs)).await?;
    r.expect_status(200)?;
    let v = r.json_or_err()?;
    shape::chat_completion(v)?;
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or("");
    let e = served_call(&c, c.tag()).await?;
    same_bytes(content, &e, cs)?;
    let (_, completion, _) = shape::usage(&v["usage"])?;
    anyhow::ensure!(
        completion == e.completion_tokens,
        "usage says {completion} completion tokens, the provider counted {} ({})",
        e.completion_tokens,
        e.tokenizer.name()
    );
    Ok(())
}

async fn streamed(c: Ctx, group: String, cs: Charset) -> anyhow::Result<()> {
    let mut b = chat(&c, &group, cs);
    b["stream"] = json!(true);
    b["stream_options"] = json!({"include_usage": true});
    let s = c.router.chat_stream(&b).await?;
    s.expect_ok()?;
    anyhow::ensure!(
        s.finish_reason().is_some(),
        "the stream has no finish_reason: {}",
        s.ending()
    );
    let content = s.content();
    let e = served_call(&c, c.tag()).await?;
    same_bytes(&content, &e, cs)?;
    let usage = s
        .usage()
        .ok_or_else(|| anyhow::anyhow!("a stream asked with include_usage carried no usage chunk"))?;
    let (_, completion, _) = shape::usage(usage)?;
    let counted = e.tokenizer.count(&content);
    anyhow::ensure!(
        completion == e.completion_tokens && counted == e.completion_tokens,
        "completion tokens: the stream's usage says {completion}, the provider {}, {} counts the \
         received text as {counted}",
        e.completion_tokens,
        e.tokenizer.name()
    );
    Ok(())
}

async fn billed(c: Ctx, group: String, cs: Charset) -> anyhow::Result<()> {
    let extra = json!({"sim_charset": cs.name()});
    let b = bill_with(&c, &group, c.tag(), prompt(cs), false, extra).await?;
    reconciled(&c, &b)?;
    let e = served_call(&c, &b.request).await?;
    anyhow::ensure!(
        !e.prompt_excerpt.is_ascii(),
        "the prompt reached {} as ASCII: {:?}",
        e.deployment,
        e.prompt_excerpt
    );
    anyhow::ensure!(
        e.charset == cs,
        "the simulator replied in {}, not {}",
        e.charset.name(),
        cs.name()
    );
    Ok(())
}

async fn recounted(c: Ctx, group: String, cs: Charset, rule: Recount) -> anyhow::Result<()> {
    let Recount::Tiktoken(encoding) = rule else {
        anyhow::bail!("no tokenizer to recount with")
    };
    let tokenizer = match encoding {
        Encoding::O200k => Tokenizer::O200kBase,
        Encoding::Cl100k => Tokenizer::Cl100kBase,
        Encoding::P50k => Tokenizer::P50kBase,
    };
    let request = Tag::fresh("req-", 6);
    let mut b = ledger_body(&c, &group, c.tag(), &request, prompt(cs));
    b["sim_charset"] = json!(cs.name());
    b["sim_usage"] = json!({"omit": true});
    b["stream"] = json!(true);
    b["stream_options"] = json!({"include_usage": true});
    let s = c.router.chat_stream(&b).await?;
    s.expect_ok()?;
    let content = s.content();
    let e = served_call(&c, &request).await?;
    same_bytes(&content, &e, cs)?;
    let messages: Vec<(String, String)> = b["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let text = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (text("role"), text("content"))
        })
        .collect();
    let want = Tokens::new(tokenizer.chat_prompt(&messages), tokenizer.count(&content));
    let usage = s.usage().ok_or_else(|| {
        anyhow::anyhow!(
            "the upstream sent no usage and the router sent the client none either, though it \
             asked include_usage"
        )
    })?;
    let (p, comp, _) = shape::usage(usage)?;
    anyhow::ensure!(
        (p, comp) == (want.prompt, want.completion),
        "the router recounted {p} prompt + {comp} completion tokens; {} (the tokenizer LiteLLM \
         picks for {group}) counts {} + {} with OpenAI's chat accounting (tolerance: 0)",
        encoding.name(),
        want.prompt,
        want.completion
    );
    let payload = c
        .sink()?
        .wait_for_where(&request, LoggingPayload::is_success, 1, FLUSH)
        .await?
        .swap_remove(0);
    let logged = (payload.prompt_tokens, payload.completion_tokens);
    anyhow::ensure!(
        logged == (Some(want.prompt), Some(want.completion)),
        "the router logged {logged:?} tokens, its own reply said ({p}, {comp})"
    );
    let dep = c
        .config
        .deployments
        .iter()
        .find(|d| d.sim.as_deref() == Some(&e.deployment))
        .map(|d| d.id.clone())
        .unwrap_or_default();
    let cost = c
        .prices
        .cost(&dep, want)
        .ok_or_else(|| anyhow::anyhow!("{dep} has no price the ledger can check"))?;
    let router = payload.response_cost.unwrap_or(-1.0);
    anyhow::ensure!(
        c.prices.agrees(router, cost),
        "the router billed {router} for {} + {} recounted tokens; the table says {cost}",
        want.prompt,
        want.completion
    );
    // What the provider's tokenizer made of the same reply: a difference is billed.
    c.observe(
        "provider_minus_router_completion_tokens",
        e.completion_tokens as f64 - comp as f64,
    );
    if e.completion_tokens != comp {
        tracing::info!(
            "{}: the provider counts {} completion tokens ({}), the router bills {comp} ({})",
            e.deployment,
            e.completion_tokens,
            e.tokenizer.name(),
            encoding.name()
        );
    }
    Ok(())
}

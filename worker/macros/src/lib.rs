//! Attribute macros for mainstay. Each is thin sugar over mainstay's public API:
//!
//! - `#[workflow]` turns `async fn f(args) -> mainstay::Result<T>` into `fn f(args) ->
//!   mainstay::WorkflowCall<..>` plus a hidden type implementing `mainstay::Workflow`, registered
//!   by name at link time;
//! - `#[step]` turns `async fn f(args) -> mainstay::Result<T>` into a function returning
//!   `mainstay::step_with(name, options, ..)`;
//! - `#[transaction]` turns `async fn f(conn: &mut PgConnection, args) -> mainstay::Result<T>`
//!   into `fn f(args)` returning `mainstay::transaction_with(name, options, ..)`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, Meta, Pat, ReturnType, Token};

/// Options shared by the attributes: `name = "..."` and the step retry policy.
#[derive(Default)]
struct Options {
    name: Option<String>,
    max_attempts: Option<u32>,
    interval_ms: Option<u64>,
    backoff_rate: Option<f64>,
    enqueue: bool,
    isolation: Option<String>,
}

fn parse_options(attr: TokenStream, allowed: &[&str]) -> syn::Result<Options> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse(attr)?;
    let mut o = Options::default();
    for meta in metas {
        if let Meta::Path(path) = &meta {
            if path.is_ident("enqueue") && allowed.contains(&"enqueue") {
                o.enqueue = true;
                continue;
            }
        }
        let Meta::NameValue(nv) = &meta else {
            return Err(syn::Error::new_spanned(meta, format!("expected `key = value`; options: {}", allowed.join(", "))));
        };
        let key = nv.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        if !allowed.contains(&key.as_str()) {
            return Err(syn::Error::new_spanned(&nv.path, format!("unknown option `{key}`; expected one of: {}", allowed.join(", "))));
        }
        let Expr::Lit(ExprLit { lit, .. }) = &nv.value else {
            return Err(syn::Error::new_spanned(&nv.value, "expected a literal"));
        };
        match (key.as_str(), lit) {
            ("name", Lit::Str(s)) => o.name = Some(s.value()),
            ("isolation", Lit::Str(s)) => match s.value().as_str() {
                "serializable" | "repeatable_read" | "read_committed" => o.isolation = Some(s.value()),
                other => {
                    return Err(syn::Error::new_spanned(
                        s,
                        format!("unknown isolation `{other}`; expected \"serializable\", \"repeatable_read\" or \"read_committed\""),
                    ))
                }
            },
            ("max_attempts", Lit::Int(i)) => {
                let n: u32 = i.base10_parse()?;
                if n == 0 {
                    return Err(syn::Error::new_spanned(i, "max_attempts must be at least 1 (1 runs the step once, without retries)"));
                }
                o.max_attempts = Some(n);
            }
            ("interval_ms", Lit::Int(i)) => o.interval_ms = Some(i.base10_parse()?),
            ("backoff_rate", Lit::Float(f)) => o.backoff_rate = Some(f.base10_parse()?),
            ("backoff_rate", Lit::Int(i)) => o.backoff_rate = Some(i.base10_parse::<u32>()? as f64),
            _ => {
                let expected = match key.as_str() {
                    "enqueue" => return Err(syn::Error::new_spanned(&meta, "`enqueue` takes no value: write `enqueue`")),
                    "name" => "a string, e.g. `name = \"charge_card\"`".to_string(),
                    "isolation" => "a string, e.g. `isolation = \"repeatable_read\"`".to_string(),
                    "backoff_rate" => "a number, e.g. `backoff_rate = 2.0`".to_string(),
                    _ => format!("an integer, e.g. `{key} = 3`"),
                };
                return Err(syn::Error::new_spanned(lit, format!("wrong type of value for `{key}`: expected {expected}")));
            }
        }
    }
    Ok(o)
}

/// The pieces of an `async fn` the macros rebuild.
struct Parts {
    args: Vec<(syn::Ident, Box<syn::Type>)>,
    arg_pats: Vec<Pat>,
    ret: Box<syn::Type>,
}

fn check_fn(f: &ItemFn, what: &str) -> syn::Result<Parts> {
    if f.sig.asyncness.is_none() {
        let ident = &f.sig.ident;
        return Err(syn::Error::new_spanned(f.sig.fn_token, format!("a {what} must be an `async fn`: write `async fn {ident}`")));
    }
    if !f.sig.generics.params.is_empty() || f.sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &f.sig.generics,
            format!("a {what} cannot be generic: its name and argument types are recorded, so use concrete types"),
        ));
    }
    let ret = match &f.sig.output {
        ReturnType::Type(_, ty) => ty.clone(),
        ReturnType::Default => {
            return Err(syn::Error::new_spanned(
                &f.sig,
                format!("a {what} must return mainstay::Result<T>: add `-> mainstay::Result<()>` and end it with `Ok(())`"),
            ))
        }
    };
    let mut args = Vec::new();
    let mut arg_pats = Vec::new();
    for (i, input) in f.sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    format!("a {what} cannot take `self`: it is called by name after a restart, with no value to call it on; make it a free function"),
                ))
            }
            FnArg::Typed(pt) => {
                args.push((format_ident!("__mainstay_arg{}", i), pt.ty.clone()));
                arg_pats.push((*pt.pat).clone());
            }
        }
    }
    Ok(Parts { args, arg_pats, ret })
}

/// Marks an `async fn` as a durable workflow. Options: `name = "..."` (default: the function
/// name) under which it is recorded and found by recovery and other SDKs.
#[proc_macro_attribute]
pub fn workflow(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_workflow(attr, item).unwrap_or_else(|e| e.to_compile_error()).into()
}

fn expand_workflow(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream2> {
    let opts = parse_options(attr, &["name"])?;
    workflow_tokens(opts, item, None)
}

/// Marks an `async fn (scheduled_at, context)` as a workflow run at every tick of a cron
/// schedule: `#[scheduled("*/30 * * * * *")]` (5 fields, or 6 with seconds first), or
/// `#[scheduled(cron = "0 9 * * *", time_zone = "Europe/Paris")]`. `scheduled_at` is the tick
/// (`mainstay::chrono::DateTime<Utc>`) and `context` the schedule's context, any
/// `DeserializeOwned` type: `null` for this schedule, so `serde_json::Value`, `Option<T>` or
/// `()`. Stored schedules (`Client::create_schedule`) and Kubernetes `Schedule`s call their
/// workflow the same way, so one workflow can serve them all.
///
/// The schedule is named `{app}.{workflow}` when the application has a name
/// (`Config::app_name`, `MAINSTAY_APP_NAME`), else after the workflow (`name = "..."` renames
/// the workflow, and so its schedule). `mainstay schedule pause {app}.{workflow}` pauses it.
#[proc_macro_attribute]
pub fn scheduled(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_scheduled(attr, item).unwrap_or_else(|e| e.to_compile_error()).into()
}

fn expand_scheduled(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream2> {
    if let Ok(lit) = syn::parse::<syn::LitStr>(attr.clone()) {
        return workflow_tokens(Options::default(), item, Some((lit.value(), None)));
    }
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse(attr)?;
    let (mut cron, mut zone, mut name) = (None, None, None);
    for meta in metas {
        let Meta::NameValue(nv) = &meta else {
            return Err(syn::Error::new_spanned(meta, "expected `cron = \"...\"`, `time_zone = \"...\"` or `name = \"...\"`"));
        };
        let key = nv.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        let Expr::Lit(ExprLit { lit: Lit::Str(value), .. }) = &nv.value else {
            return Err(syn::Error::new_spanned(&nv.value, "expected a string literal"));
        };
        match key.as_str() {
            "cron" => cron = Some(value.value()),
            "time_zone" => zone = Some(value.value()),
            "name" => name = Some(value.value()),
            _ => return Err(syn::Error::new_spanned(&nv.path, "unknown option; expected cron, time_zone or name")),
        }
    }
    let Some(cron) = cron else {
        return Err(syn::Error::new(Span::call_site(), "a scheduled workflow needs a cron expression: #[scheduled(\"* * * * *\")]"));
    };
    workflow_tokens(Options { name, ..Options::default() }, item, Some((cron, zone)))
}

/// A type as its author wrote it (`Vec<String>`, not the token stream's `Vec < String >`).
fn type_text(ty: &impl quote::ToTokens) -> String {
    let spaced = quote!(#ty).to_string();
    let mut out = String::with_capacity(spaced.len());
    let chars: Vec<char> = spaced.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c == ' ' {
            let before = i.checked_sub(1).map(|j| chars[j]);
            let after = chars.get(i + 1).copied();
            // Keep the space only between two words (`dyn Trait`, `impl Fn`) and after a comma.
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            if (word(before) && word(after)) || before == Some(',') {
                out.push(' ');
            }
            continue;
        }
        out.push(*c);
    }
    out
}

/// A hash (FNV-1a) of a workflow function's tokens, signature and body: it changes when the
/// workflow's code does, and feeds the default application version.
fn source_hash(f: &ItemFn) -> u64 {
    use std::hash::Hasher;
    let mut hash = fnv::FnvHasher::default();
    hash.write(quote!(#f).to_string().as_bytes());
    hash.finish()
}

fn workflow_tokens(opts: Options, item: TokenStream, schedule: Option<(String, Option<String>)>) -> syn::Result<TokenStream2> {
    let f: ItemFn = syn::parse(item)?;
    let Parts { args, arg_pats, ret } = check_fn(&f, "workflow")?;
    let source_hash = source_hash(&f);
    let vis = &f.vis;
    let ident = &f.sig.ident;
    let name = opts.name.unwrap_or_else(|| ident.to_string());
    let ty = format_ident!("__mainstay_workflow_{}", ident);
    let attrs = &f.attrs;
    let body = &f.block;
    let arg_names: Vec<_> = args.iter().map(|(n, _)| n).collect();
    let arg_types: Vec<_> = args.iter().map(|(_, t)| t).collect();
    let arg_type_texts: Vec<String> = arg_types.iter().map(type_text).collect();
    let registration = match schedule {
        None => quote! { ::mainstay::Registration::of::<#ty>() },
        Some((cron, zone)) => {
            if args.len() != 2 {
                let found = args.len();
                let msg = format!(
                    "a scheduled workflow takes 2 parameters, (scheduled_at, context), not {found}: the tick, a \
                     mainstay::chrono::DateTime<mainstay::chrono::Utc>, and the schedule's context, any serde type \
                     (e.g. serde_json::Value, Option<T> or ())"
                );
                return Err(match found {
                    0 => syn::Error::new_spanned(&f.sig, msg),
                    _ => syn::Error::new_spanned(&f.sig.inputs, msg),
                });
            }
            let zone = match zone {
                Some(z) => quote! { ::std::option::Option::Some(#z) },
                None => quote! { ::std::option::Option::None },
            };
            quote! { ::mainstay::Registration::scheduled::<#ty>(#cron, #zone) }
        }
    };
    Ok(quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #ty;

        impl ::mainstay::Workflow for #ty {
            const NAME: &'static str = #name;
            const SOURCE_HASH: u64 = #source_hash;
            const ARGUMENTS: ::std::option::Option<&'static [&'static str]> = ::std::option::Option::Some(&[ #( #arg_type_texts ),* ]);
            type Args = ( #( #arg_types, )* );
            type Output = <#ret as ::mainstay::__private::WorkflowResult>::Ok;
            fn run(args: Self::Args) -> ::mainstay::__private::BoxFuture<'static, ::mainstay::Result<Self::Output>> {
                async fn __mainstay_body( #( #arg_pats: #arg_types ),* ) -> #ret #body
                let ( #( #arg_names, )* ) = args;
                ::mainstay::__private::boxed(__mainstay_body( #( #arg_names ),* ))
            }
        }

        ::mainstay::__private::inventory::submit! {
            #registration
        }

        #( #attrs )*
        #vis fn #ident( #( #arg_names: #arg_types ),* ) -> ::mainstay::WorkflowCall<#ty> {
            ::mainstay::WorkflowCall::new(( #( #arg_names, )* ))
        }
    })
}

/// Marks an `async fn` as a step: inside a workflow its outcome is checkpointed and a replay
/// returns it without running it. Options: `name = "..."`, `max_attempts = N` (retries; the
/// arguments must then be `Clone`), `interval_ms = N`, `backoff_rate = F`, and `enqueue` (the
/// step can also be enqueued on a queue, where it runs as a workflow of its own; its arguments
/// must then be serde types and `Clone`).
#[proc_macro_attribute]
pub fn step(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_step(attr, item).unwrap_or_else(|e| e.to_compile_error()).into()
}

fn expand_step(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream2> {
    let opts = parse_options(attr, &["name", "max_attempts", "interval_ms", "backoff_rate", "enqueue"])?;
    let f: ItemFn = syn::parse(item)?;
    let Parts { args, arg_pats, ret } = check_fn(&f, "step")?;
    let vis = &f.vis;
    let ident = &f.sig.ident;
    let name = opts.name.unwrap_or_else(|| ident.to_string());
    let attrs = &f.attrs;
    let body = &f.block;
    let arg_names: Vec<_> = args.iter().map(|(n, _)| n).collect();
    let arg_types: Vec<_> = args.iter().map(|(_, t)| t).collect();
    let max_attempts = opts.max_attempts.unwrap_or(1);
    let mut options = quote! { ::mainstay::StepOptions::retries(#max_attempts) };
    if let Some(ms) = opts.interval_ms {
        options = quote! { #options.interval(::std::time::Duration::from_millis(#ms)) };
    }
    if let Some(rate) = opts.backoff_rate {
        options = quote! { #options.backoff_rate(#rate) };
    }
    if opts.enqueue {
        // An enqueueable step: a `Step` type (arguments must be serde and Clone), registered as
        // the workflow that runs it when it is enqueued.
        let ty = format_ident!("__mainstay_step_{}", ident);
        return Ok(quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            #vis struct #ty;

            impl ::mainstay::Step for #ty {
                const NAME: &'static str = #name;
                type Args = ( #( #arg_types, )* );
                type Output = <#ret as ::mainstay::__private::WorkflowResult>::Ok;
                fn options() -> ::mainstay::StepOptions {
                    #options
                }
                fn run(args: Self::Args) -> ::mainstay::__private::BoxFuture<'static, ::mainstay::Result<Self::Output>> {
                    async fn __mainstay_body( #( #arg_pats: #arg_types ),* ) -> #ret #body
                    let ( #( #arg_names, )* ) = args;
                    ::mainstay::__private::boxed(__mainstay_body( #( #arg_names ),* ))
                }
            }

            ::mainstay::__private::inventory::submit! {
                ::mainstay::Registration::of::<::mainstay::StepWorkflow<#ty>>()
            }

            #( #attrs )*
            #vis fn #ident( #( #arg_names: #arg_types ),* ) -> ::mainstay::StepCall<#ty> {
                ::mainstay::StepCall::new(( #( #arg_names, )* ))
            }
        });
    }
    // With one attempt the closure runs once and may move the arguments; with retries each
    // attempt gets a clone.
    let call = if max_attempts > 1 {
        quote! {
            let __mainstay_args = ( #( #arg_names, )* );
            ::mainstay::step_with(#name, #options, move || {
                let ( #( #arg_names, )* ) = ::std::clone::Clone::clone(&__mainstay_args);
                __mainstay_body( #( #arg_names ),* )
            })
        }
    } else {
        quote! {
            let mut __mainstay_args = ::std::option::Option::Some(( #( #arg_names, )* ));
            ::mainstay::step_with(#name, #options, move || {
                let ( #( #arg_names, )* ) = __mainstay_args
                    .take()
                    .expect("a step without retries runs its body once");
                __mainstay_body( #( #arg_names ),* )
            })
        }
    };
    Ok(quote! {
        #( #attrs )*
        #vis fn #ident( #( #arg_names: #arg_types ),* )
            -> impl ::std::future::Future<Output = #ret> + ::std::marker::Send
        {
            async fn __mainstay_body( #( #arg_pats: #arg_types ),* ) -> #ret #body
            #call
        }
    })
}

/// Marks an `async fn` as a transaction: its first parameter is the connection of an open
/// transaction on the application database (`&mut mainstay::sqlx::PgConnection`), the others
/// are the call's arguments (`Clone`: a serialization failure runs the body again). Inside a
/// workflow it takes effect exactly once. Options: `name = "..."`, `isolation =
/// "serializable" | "repeatable_read" | "read_committed"` (default serializable).
#[proc_macro_attribute]
pub fn transaction(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_transaction(attr, item).unwrap_or_else(|e| e.to_compile_error()).into()
}

fn expand_transaction(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream2> {
    let opts = parse_options(attr, &["name", "isolation"])?;
    let f: ItemFn = syn::parse(item)?;
    let Parts { args, arg_pats, ret } = check_fn(&f, "transaction")?;
    if args.is_empty() {
        return Err(syn::Error::new_spanned(
            &f.sig,
            "a transaction's first parameter is its connection: \
             `conn: &mut mainstay::sqlx::PgConnection`",
        ));
    }
    // Checked by `parse_options`, with the literal's place.
    let isolation = match opts.isolation.as_deref() {
        Some("repeatable_read") => quote! { ::mainstay::Isolation::RepeatableRead },
        Some("read_committed") => quote! { ::mainstay::Isolation::ReadCommitted },
        _ => quote! { ::mainstay::Isolation::Serializable },
    };
    let vis = &f.vis;
    let ident = &f.sig.ident;
    let name = opts.name.unwrap_or_else(|| ident.to_string());
    let attrs = &f.attrs;
    let body = &f.block;
    let conn_ty = &args[0].1;
    let conn_pat = &arg_pats[0];
    let arg_names: Vec<_> = args[1..].iter().map(|(n, _)| n).collect();
    let arg_types: Vec<_> = args[1..].iter().map(|(_, t)| t).collect();
    let rest_pats = &arg_pats[1..];
    Ok(quote! {
        #( #attrs )*
        #vis fn #ident( #( #arg_names: #arg_types ),* )
            -> impl ::std::future::Future<Output = #ret> + ::std::marker::Send
        {
            async fn __mainstay_body( #conn_pat: #conn_ty, #( #rest_pats: #arg_types ),* ) -> #ret #body
            let __mainstay_args = ( #( #arg_names, )* );
            ::mainstay::transaction_with(
                #name,
                ::mainstay::TransactionOptions::default().isolation(#isolation),
                move |__mainstay_conn| {
                    let ( #( #arg_names, )* ) = ::std::clone::Clone::clone(&__mainstay_args);
                    ::mainstay::__private::boxed_for(__mainstay_body(__mainstay_conn, #( #arg_names ),* ))
                },
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_hash_is_fnv1a_of_the_tokens() {
        // Source hashes feed default versions recorded in databases: the function's token
        // text hashed with FNV-1a, never anything else (reference computed by hand).
        let f: ItemFn = syn::parse_quote! { async fn a() {} };
        let text = quote!(#f).to_string();
        let reference = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        assert_eq!(source_hash(&f), reference);
    }
}

//! `#[derive(MeshActor)]`: the glue between a user's actix actor and the mesh runtime.
//!
//! The derive emits only glue; all behaviour lives in `mesh_actix::__private`, so the
//! generated code stays small and the runtime stays testable:
//! - `impl MeshActor`: the module name (the struct's name, or `#[mesh(name = "...")]`), and
//!   with `#[mesh(snapshot)]` or `#[mesh(durable)]` the glue to the type's
//!   `mesh_actix::Snapshot` impl (the user's `Handler<Payload>` is reached through
//!   `mesh_actix::HandlesPayload`, implemented for every actor that has one);
//! - `impl Supervised`: actix restarts the actor in place after a caught panic;
//! - `impl Handler<Envelope>`: the guarded handler through which mesh delivers every payload.
//!
//! Generated paths go through mesh-actix's hidden `__private` module, so users need not depend
//! on actix or serde_json by those names.

use proc_macro::TokenStream;
use proc_macro2::Span;
use proc_macro_crate::{crate_name, FoundCrate};
use quote::quote;
use syn::{parse_macro_input, DeriveInput, Ident, LitStr};

/// Derives `mesh_actix::MeshActor` for an actix actor that implements `Handler<Payload>` and
/// `MeshInit`. See the `mesh_actix` crate documentation for a complete example.
#[proc_macro_derive(MeshActor, attributes(mesh))]
pub fn derive_mesh_actor(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(input)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

fn expand(input: DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "MeshActor cannot be derived for generic types: a module name must name one type",
        ));
    }
    let ty = &input.ident;
    let attrs = MeshAttrs::parse(&input)?;
    let module = attrs
        .name
        .unwrap_or_else(|| LitStr::new(&ty.to_string(), ty.span()));
    let krate = runtime_crate()?;
    let p = quote!(#krate::__private);
    let durable = attrs.durable.then(|| {
        quote!(
            const DURABLE: bool = true;
        )
    });
    let idle_timeout = attrs.idle_timeout_secs.map(|secs| {
        quote! {
            const IDLE_TIMEOUT_SECS: ::core::option::Option<u64> = ::core::option::Option::Some(#secs);
        }
    });
    let state = (attrs.snapshot || attrs.durable).then(|| {
        quote! {
            const STATE: ::core::option::Option<#p::StateGlue<Self>> =
                ::core::option::Option::Some(#p::StateGlue::<Self>::OF);
        }
    });
    Ok(quote! {
        impl #krate::MeshActor for #ty {
            const MODULE: &'static str = #module;

            #state
            #durable
            #idle_timeout
        }

        impl #p::actix::Supervised for #ty {}

        impl #p::actix::Handler<#p::Envelope> for #ty {
            type Result = #p::EnvelopeResponse<Self>;

            fn handle(
                &mut self,
                envelope: #p::Envelope,
                ctx: &mut #p::actix::Context<Self>,
            ) -> Self::Result {
                #p::handle_envelope(self, envelope, ctx)
            }
        }
    })
}

/// What `#[mesh(...)]` says, each at most once:
/// - `name = "..."`: the module name;
/// - `snapshot`: the type implements `mesh_actix::Snapshot`, so its state is handed over on
///   planned moves;
/// - `durable`: the same `Snapshot` state is also kept in the node's store (loaded on
///   activation, saved after every call that changed it, before the reply);
/// - `idle_timeout_secs = n`: passivate an activation idle for n seconds (0: never).
#[derive(Default)]
struct MeshAttrs {
    name: Option<LitStr>,
    snapshot: bool,
    durable: bool,
    idle_timeout_secs: Option<u64>,
}

impl MeshAttrs {
    fn parse(input: &DeriveInput) -> syn::Result<MeshAttrs> {
        let mut attrs = MeshAttrs::default();
        for attr in input.attrs.iter().filter(|a| a.path().is_ident("mesh")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    if attrs.name.is_some() {
                        return Err(meta.error("duplicate `name`: give the module one name"));
                    }
                    let value: LitStr = meta.value()?.parse()?;
                    if value.value().is_empty() {
                        return Err(meta.error("the module name must not be empty"));
                    }
                    attrs.name = Some(value);
                    Ok(())
                } else if meta.path.is_ident("snapshot") {
                    if attrs.snapshot {
                        return Err(meta.error("duplicate `snapshot`"));
                    }
                    attrs.snapshot = true;
                    Ok(())
                } else if meta.path.is_ident("durable") {
                    if attrs.durable {
                        return Err(meta.error("duplicate `durable`"));
                    }
                    attrs.durable = true;
                    Ok(())
                } else if meta.path.is_ident("idle_timeout_secs") {
                    if attrs.idle_timeout_secs.is_some() {
                        return Err(meta.error("duplicate `idle_timeout_secs`"));
                    }
                    let value: syn::LitInt = meta.value()?.parse()?;
                    attrs.idle_timeout_secs = Some(value.base10_parse::<u64>()?);
                    Ok(())
                } else {
                    Err(meta.error(
                        "unknown mesh attribute; expected `name = \"...\"`, `snapshot`, \
                         `durable` or `idle_timeout_secs = n`",
                    ))
                }
            })?;
        }
        Ok(attrs)
    }
}

fn runtime_crate() -> syn::Result<proc_macro2::TokenStream> {
    match crate_name("mesh-actix") {
        // mesh-actix declares `extern crate self as mesh_actix`, so the absolute path works in
        // its own unit tests and doctests alike.
        Ok(FoundCrate::Itself) => Ok(quote!(::mesh_actix)),
        Ok(FoundCrate::Name(name)) => {
            let ident = Ident::new(&name, Span::call_site());
            Ok(quote!(::#ident))
        }
        Err(e) => Err(syn::Error::new(
            Span::call_site(),
            format!("#[derive(MeshActor)] needs the `mesh-actix` dependency: {e}"),
        )),
    }
}

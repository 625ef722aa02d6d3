//! `#[derive(MeshActor)]`: the glue between a user's actix actor and the mesh runtime.
//!
//! The derive emits only glue; all behaviour lives in `mesh_actix::__private`, so the
//! generated code stays small and the runtime stays testable:
//! - `impl MeshActor`: the module name (the struct's name, or `#[mesh(name = "...")]`), a
//!   shim that calls the user's `Handler<Payload>` and normalises its result, and with
//!   `#[mesh(snapshot)]` the glue to the type's `mesh_actix::Snapshot` impl;
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
    let snapshot = attrs.snapshot.then(|| {
        quote! {
            fn snapshot_state(&self) -> ::core::option::Option<
                ::core::result::Result<#p::serde_json::Value, ::std::string::String>,
            > {
                #p::snapshot_to_value(self)
            }

            fn restore_state(
                id: &#krate::ActorId,
                state: #p::serde_json::Value,
            ) -> ::core::option::Option<::core::result::Result<Self, #krate::InitError>> {
                #p::restore_from_value::<Self>(id, state)
            }
        }
    });
    Ok(quote! {
        impl #krate::MeshActor for #ty {
            const MODULE: &'static str = #module;

            fn handle_payload(
                &mut self,
                payload: #krate::Payload,
                ctx: &mut #p::actix::Context<Self>,
            ) -> #p::MeshResponse<Self> {
                #p::IntoMeshResponse::into_mesh_response(
                    <Self as #p::actix::Handler<#krate::Payload>>::handle(self, payload, ctx),
                )
            }

            #snapshot
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

/// What `#[mesh(...)]` says: `name = "..."` (the module name) and `snapshot` (the type
/// implements `mesh_actix::Snapshot`, so its state is handed over on planned moves). Each at
/// most once.
#[derive(Default)]
struct MeshAttrs {
    name: Option<LitStr>,
    snapshot: bool,
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
                } else {
                    Err(meta
                        .error("unknown mesh attribute; expected `name = \"...\"` or `snapshot`"))
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

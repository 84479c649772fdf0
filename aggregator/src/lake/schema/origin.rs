//! Where a row comes from (tenant, service, scope, resource), stored once per run of rows.

use super::*;

/// Where a row comes from: its tenant, resource and scope.
pub struct Origin<'a> {
    pub tenant: &'a str,
    pub service: &'a str,
    pub resource: Option<&'a Resource>,
    pub scope: Option<&'a InstrumentationScope>,
}

impl Origin<'_> {
    fn resource_attrs(&self) -> &[KeyValue] {
        self.resource.map_or(&[], |r| &r.attributes)
    }

    fn scope_name(&self) -> Option<&str> {
        self.scope.map(|s| s.name.as_str()).and_then(nonempty)
    }
}

/// The columns a row takes from where it came from: tenant, service, scope
/// name and resource attributes. Rows arrive in runs from one origin (a
/// request's resource and scope), so each run's values are stored once and
/// expanded to one per row only when the batch is finished: rows waiting in
/// memory do not each hold a copy of their resource.
pub(super) struct OriginColumns {
    tenant: StringBuilder,
    service: StringBuilder,
    scope_name: StringBuilder,
    resource_attributes: AttrMap,
    /// The last run's origin, to compare the next row's with.
    last: Option<OwnedOrigin>,
    runs: u32,
    /// Per row, its run.
    run_of_row: Vec<u32>,
}

#[derive(PartialEq)]
struct OwnedOrigin {
    tenant: String,
    service: String,
    scope_name: Option<String>,
    resource_attributes: Vec<KeyValue>,
}

impl OwnedOrigin {
    fn is(&self, o: &Origin<'_>) -> bool {
        self.tenant == o.tenant
            && self.service == o.service
            && self.scope_name.as_deref() == o.scope_name()
            && self.resource_attributes == o.resource_attrs()
    }
}

impl Default for OriginColumns {
    fn default() -> OriginColumns {
        OriginColumns {
            tenant: StringBuilder::new(),
            service: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            resource_attributes: attr_map(),
            last: None,
            runs: 0,
            run_of_row: Vec::new(),
        }
    }
}

impl OriginColumns {
    pub(super) fn push(&mut self, o: &Origin<'_>) {
        if !self.last.as_ref().is_some_and(|l| l.is(o)) {
            self.tenant.append_value(o.tenant);
            self.service.append_value(o.service);
            self.scope_name.append_option(o.scope_name());
            append_attrs(&mut self.resource_attributes, o.resource_attrs());
            self.last = Some(OwnedOrigin {
                tenant: o.tenant.to_owned(),
                service: o.service.to_owned(),
                scope_name: o.scope_name().map(str::to_owned),
                resource_attributes: o.resource_attrs().to_vec(),
            });
            self.runs += 1;
        }
        self.run_of_row.push(self.runs - 1);
    }

    /// Tenant, service, scope name and resource attributes, one per row.
    pub(super) fn finish(&mut self) -> Result<[ArrayRef; 4], ArrowError> {
        let rows = UInt32Array::from(std::mem::take(&mut self.run_of_row));
        self.last = None;
        self.runs = 0;
        let per_row = |runs: ArrayRef| take(&runs, &rows, None);
        Ok([
            per_row(Arc::new(self.tenant.finish()))?,
            per_row(Arc::new(self.service.finish()))?,
            per_row(Arc::new(self.scope_name.finish()))?,
            per_row(Arc::new(self.resource_attributes.finish()))?,
        ])
    }
}

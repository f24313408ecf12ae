//! The pharmacy's change feed: inbox screens hear of every prescription that changed, on
//! whichever replica it changed (see `hixbus_service::changes`).

use hixbus_service::changes::{self, Source};

use crate::store::{PrescriptionRow, Store, StoreError};

/// The PostgreSQL channel changes travel on; the payload is the prescription id.
pub const CHANNEL: &str = "hixbus_pharmacy_changes";

pub type Changes = changes::Changes<Store>;

impl Source for Store {
    type Row = PrescriptionRow;
    type Error = StoreError;

    async fn load(&self, prescription_id: &str) -> Result<Option<PrescriptionRow>, StoreError> {
        self.get(prescription_id).await
    }
}

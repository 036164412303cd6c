package messages

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The send window's fields are part of the admin API's tenant JSON
// (docs/contract.md, Admin API), under these names, and always present.
func TestTenantInfoWindowJSON(t *testing.T) {
	t.Run("NamesAndValues", func(t *testing.T) {
		raw, err := json.Marshal(TenantInfo{ID: "acme", InFlight: 37, Window: 64, RecipientsWaiting: 5})
		require.NoError(t, err)
		var fields map[string]any
		require.NoError(t, json.Unmarshal(raw, &fields))
		assert.Equal(t, 37.0, fields["inFlight"])
		assert.Equal(t, 64.0, fields["window"])
		assert.Equal(t, 5.0, fields["recipientsWaiting"])
	})
	t.Run("ZeroIsShownNotOmitted", func(t *testing.T) {
		raw, err := json.Marshal(TenantInfo{ID: "acme"})
		require.NoError(t, err)
		assert.Contains(t, string(raw), `"window":0`)
		assert.Contains(t, string(raw), `"recipientsWaiting":0`)
	})
	t.Run("RoundTrips", func(t *testing.T) {
		var got TenantInfo
		require.NoError(t, json.Unmarshal([]byte(`{"id":"acme","inFlight":3,"window":8,"recipientsWaiting":2}`), &got))
		assert.Equal(t, TenantInfo{ID: "acme", InFlight: 3, Window: 8, RecipientsWaiting: 2}, got)
	})
}

package messages

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const scanPayload = `"wabaPayload":{"messaging_product":"whatsapp","to":"1555","type":"text"}`

// scanSeeds are bodies at the edges of what scanJob reads itself; each is
// also a seed of FuzzDecodeJob.
var scanSeeds = []struct {
	name    string
	body    string
	scanned bool // taken by the fast path rather than left to encoding/json
}{
	{"Typical", benchJob, true},
	{"KeysInAnyCase", `{"METADATA":{"TenantID":"acme","INTERNALID":"a"},"WabaPayload":{"Messaging_Product":"whatsapp","TO":"1","Type":"text"}}`, true},
	{"LastDuplicateWins", `{"metadata":{"tenantId":"x","tenantId":"acme","internalId":"a"},"wabaPayload":{"messaging_product":"sms","messaging_product":"whatsapp","to":"1","type":"text"},"metadata":{"tenantId":"beta","internalId":"b"}}`, true},
	{"WhitespaceEverywhere", " \n{ \"metadata\" : { \"tenantId\" : \"acme\" ,\r\n\"internalId\" : \"a\" } ,\t" + scanPayload + " } \t", true},
	{"NestedLookalikesIgnored", `{"x":{"metadata":1},"metadata":{"m":{"tenantId":"evil"},"tenantId":"acme","internalId":"a","n":-1.5e+3},"wabaPayload":{"to":"1","type":"text","x":[1,{"type":[true,false,null]}],"messaging_product":"whatsapp"}}`, true},
	{"EscapesInOtherStrings", `{"metadata":{"tenantId":"acme","internalId":"a","q":"say \"hi\" \\"},"wabaPayload":{"messaging_product":"whatsapp","to":"1","type":"text","text":{"body":"\\\"\u00e9\\"}}}`, true},
	{"UnicodeInternalID", `{"metadata":{"tenantId":"acme","internalId":"bestellung-größe"},` + scanPayload + `}`, true},
	{"LongestTenantID", `{"metadata":{"tenantId":"` + strings.Repeat("a", 64) + `","internalId":"a"},` + scanPayload + `}`, true},
	{"TenantIDTooLong", `{"metadata":{"tenantId":"` + strings.Repeat("a", 65) + `","internalId":"a"},` + scanPayload + `}`, false},
	{"EscapedValue", `{"metadata":{"tenantId":"acme","internalId":"a"},"wabaPayload":{"messaging_product":"whats\u0061pp","to":"1","type":"text"}}`, false},
	{"EscapedKey", `{"metadata":{"tenantId":"acme","internalId":"a"},"wabaPayload":{"messaging_product":"whatsapp","t\u006f":"1","type":"text"}}`, false},
	{"KeyFoldedByUnicode", `{"metadata":{"tenantId":"acme","internalId":"a"},"wabaPayload":{"meſſaging_product":"whatsapp","to":"1","type":"text"}}`, false},
	{"InvalidUTF8InternalID", "{\"metadata\":{\"tenantId\":\"acme\",\"internalId\":\"a\xff\"}," + scanPayload + "}", false},
	{"NullThenString", `{"metadata":{"tenantId":"acme","internalId":"a"},"wabaPayload":{"messaging_product":"whatsapp","to":null,"to":"1","type":"text"}}`, false},
	{"NullTenant", `{"metadata":{"tenantId":null,"internalId":"a"},` + scanPayload + `}`, false},
	{"NumberTo", `{"metadata":{"tenantId":"acme","internalId":"a"},"wabaPayload":{"messaging_product":"whatsapp","to":1555,"type":"text"}}`, false},
	{"NullMetadata", `{"metadata":null,` + scanPayload + `}`, false},
	{"EmptyObject", `{}`, false},
	{"TopLevelNull", `null`, false},
	{"TopLevelArray", `[{"metadata":{}}]`, false},
	{"TrailingGarbage", `{"metadata":{"tenantId":"acme","internalId":"a"},` + scanPayload + `}x`, false},
}

func TestScanJob(t *testing.T) {
	for _, c := range scanSeeds {
		t.Run(c.name, func(t *testing.T) {
			_, ok := scanJob([]byte(c.body))
			assert.Equal(t, c.scanned, ok, "taken by the fast path")
			assertDecodesAsEncodingJSON(t, []byte(c.body))
		})
	}

	t.Run("KeepsPayloadAndMetadataByteForByteAndApart", func(t *testing.T) {
		j, ok := scanJob([]byte(benchJob))
		require.True(t, ok)
		assert.Equal(t, `{"tenantId":"acme","internalId":"order-1042-confirmation","source":"shop","orderId":1042}`, string(j.Metadata))
		assert.True(t, strings.HasPrefix(benchJob[strings.Index(benchJob, `"wabaPayload":`)+14:], string(j.Payload)))
		j.Metadata = append(j.Metadata, "!!"...)
		assert.Equal(t, byte('{'), j.Payload[0], "appending to Metadata leaves Payload alone")
	})
}

// FuzzDecodeJob checks that DecodeJob, fast path included, decodes every
// body exactly as encoding/json does: the same job or the same error.
func FuzzDecodeJob(f *testing.F) {
	for _, c := range scanSeeds {
		f.Add([]byte(c.body))
	}
	f.Add(benchTemplateJob())
	f.Fuzz(assertDecodesAsEncodingJSON)
}

func assertDecodesAsEncodingJSON(t *testing.T, body []byte) {
	want, wantErr := decodeJob(body)
	got, err := DecodeJob(body)
	assert.Equal(t, wantErr, err)
	assert.Equal(t, want, got)
}

func FuzzValidTenantID(f *testing.F) {
	for _, id := range []string{"acme", "a", "A-b_c.9", "-a", "_a", ".a", "a/b", "a b", "ä", "", strings.Repeat("a", 64), strings.Repeat("a", 65), "a\n"} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		assert.Equal(t, tenantIDPattern.MatchString(id), ValidTenantID(id), "%q", id)
	})
}

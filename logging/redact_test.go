package logging

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	testToken    = "EAAGm0PBxZCv4lu3Q8f3k2"
	testPassword = "hunter2-broker-pw"
	// canary is a value logged under sensitive keys; it is not a registered
	// secret, so only key-based redaction can keep it out of a line.
	canary = "canary-not-registered"
)

type sensitiveConfig struct {
	Name        string
	AccessToken string
	Credential  string `json:"api_token"`
	Password    string `json:"p"`
	Port        int    `json:"port,omitempty"`
	Ignored     string `json:"-"`
	unexported  string
}

type embeddedBase struct {
	Secret string
	Region string
}

type withEmbedded struct {
	embeddedBase
	Name string
}

type credentials struct {
	user, password string
}

func (c credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", c.user), slog.String("password", c.password))
}

type holder struct {
	Label string
	Creds credentials
}

type headerString string

func (h headerString) String() string { return "Authorization: Bearer " + string(h) }

type panicStringer int

func (panicStringer) String() string { panic("String exploded: " + testToken) }

type panicError struct{}

func (*panicError) Error() string { panic("Error exploded") }

type failingMarshaler struct{}

func (failingMarshaler) MarshalJSON() ([]byte, error) { return nil, errors.New("cannot marshal") }

type node struct {
	Name string
	Next *node
}

type panicLogValuer struct{}

func (panicLogValuer) LogValue() slog.Value { panic("LogValue exploded: " + testToken) }

func TestRedaction(t *testing.T) {
	cases := []struct {
		name  string
		log   func(l *slog.Logger)
		want  map[string]any                          // dotted path in the decoded line -> value
		check func(t *testing.T, line map[string]any) // optional further checks
	}{
		// By key.
		{
			name: "RedactsTokenKey",
			log:  func(l *slog.Logger) { l.Info("e", "token", canary) },
			want: map[string]any{"token": Redacted},
		},
		{
			name: "RedactsUpperSnakeAccessToken",
			log:  func(l *slog.Logger) { l.Info("e", "ACCESS_TOKEN", canary) },
			want: map[string]any{"ACCESS_TOKEN": Redacted},
		},
		{
			name: "RedactsXAuthorizationHeader",
			log:  func(l *slog.Logger) { l.Info("e", "X-Authorization", "Bearer "+canary) },
			want: map[string]any{"X-Authorization": Redacted},
		},
		{
			name: "RedactsMixedCasePassword",
			log:  func(l *slog.Logger) { l.Info("e", "brokerPassWord", canary) },
			want: map[string]any{"brokerPassWord": Redacted},
		},
		{
			name: "RedactsSecretAndSystemUserAccessToken",
			log: func(l *slog.Logger) {
				l.Info("e", "clientSecret", canary, "systemUserAccessToken", canary)
			},
			want: map[string]any{"clientSecret": Redacted, "systemUserAccessToken": Redacted},
		},
		{
			name: "RedactsUnicodeCaseVariantOfKey",
			log:  func(l *slog.Logger) { l.Info("e", "to\u212aen", canary) }, // Kelvin sign folds to k
			want: map[string]any{"to\u212aen": Redacted},
		},
		{
			name: "RedactsNonStringValuesUnderSensitiveKeys",
			log:  func(l *slog.Logger) { l.Info("e", slog.Int("tokens", 42), slog.Bool("hasPassword", true)) },
			want: map[string]any{"tokens": Redacted, "hasPassword": Redacted},
		},
		{
			name: "LeavesOrdinaryKeysAlone",
			log: func(l *slog.Logger) {
				l.Info("e", "tenantId", "acme", "duration", 212*time.Millisecond, "attempts", 3)
			},
			want: map[string]any{"tenantId": "acme", "duration": json.Number("212000000"), "attempts": json.Number("3")},
		},
		{
			name: "RedactsWholeGroupWithSensitiveName",
			log: func(l *slog.Logger) {
				l.Info("e", slog.Group("authorization", "scheme", "Bearer", "value", canary))
			},
			want: map[string]any{"authorization": Redacted},
		},
		{
			name: "RedactsKeyInsideGroup",
			log: func(l *slog.Logger) {
				l.Info("e", slog.Group("request", "accessToken", canary, "path", "/v23.0/1065/messages"))
			},
			want: map[string]any{"request.accessToken": Redacted, "request.path": "/v23.0/1065/messages"},
		},
		{
			name: "RedactsKeyInsideNestedGroups",
			log: func(l *slog.Logger) {
				l.Info("e", slog.Group("a", slog.Group("b", "Password", canary, "ok", 1)))
			},
			want: map[string]any{"a.b.Password": Redacted, "a.b.ok": json.Number("1")},
		},
		{
			name: "RedactsKeyInsideInlinedGroup",
			log:  func(l *slog.Logger) { l.Info("e", slog.Group("", "secret", canary)) },
			want: map[string]any{"secret": Redacted},
		},
		{
			name: "RedactsKeyUnderWithGroup",
			log: func(l *slog.Logger) {
				l.WithGroup("http").Info("e", "Authorization", canary, "status", 401)
			},
			want: map[string]any{"http.Authorization": Redacted, "http.status": json.Number("401")},
		},
		{
			name: "RedactsEveryValueUnderSensitiveWithGroup",
			log: func(l *slog.Logger) {
				l.WithGroup("secrets").With("a", canary).Info("e", "b", canary, slog.Group("c", "d", canary))
			},
			want: map[string]any{"secrets.a": Redacted, "secrets.b": Redacted, "secrets.c.d": Redacted},
		},
		{
			name: "RedactsWithAttrs",
			log:  func(l *slog.Logger) { l.With("token", canary, "tenantId", "acme").Info("e") },
			want: map[string]any{"token": Redacted, "tenantId": "acme"},
		},
		{
			name: "RedactsWithAttrsInsideWithGroup",
			log: func(l *slog.Logger) {
				l.WithGroup("meta").With("appSecret", canary).WithGroup("call").Info("e", "token", canary)
			},
			want: map[string]any{"meta.appSecret": Redacted, "meta.call.token": Redacted},
		},
		{
			name: "RedactsMapKeys",
			log: func(l *slog.Logger) {
				l.Info("e", "headers", map[string]string{"Authorization": "Bearer " + canary, "Accept": "application/json"})
			},
			want: map[string]any{"headers.Authorization": Redacted, "headers.Accept": "application/json"},
		},
		{
			name: "RedactsNestedMaps",
			log: func(l *slog.Logger) {
				l.Info("e", "cfg", map[string]any{"outer": map[string]any{"DB_PASSWORD": canary, "host": "db"}})
			},
			want: map[string]any{"cfg.outer.DB_PASSWORD": Redacted, "cfg.outer.host": "db"},
		},
		{
			name: "RedactsStructFieldsAndJSONTags",
			log: func(l *slog.Logger) {
				l.Info("e", "cfg", sensitiveConfig{
					Name: "acme", AccessToken: canary, Credential: canary, Password: canary,
					Ignored: canary, unexported: canary,
				})
			},
			want: map[string]any{
				"cfg.Name": "acme", "cfg.AccessToken": Redacted, "cfg.api_token": Redacted, "cfg.p": Redacted,
			},
		},
		{
			name: "RedactsThroughPointersAndEmbeddedStructs",
			log: func(l *slog.Logger) {
				l.Info("e", "tenant", &withEmbedded{embeddedBase: embeddedBase{Secret: canary, Region: "eu"}, Name: "acme"})
			},
			want: map[string]any{"tenant.Secret": Redacted, "tenant.Region": "eu", "tenant.Name": "acme"},
		},
		{
			name: "RedactsInsideSlices",
			log: func(l *slog.Logger) {
				l.Info("e", "items", []any{map[string]string{"token": canary}, sensitiveConfig{Password: canary}, "plain"})
			},
			want: map[string]any{"items.0.token": Redacted, "items.1.p": Redacted, "items.2": "plain"},
		},
		{
			name: "RedactsLogValuer",
			log:  func(l *slog.Logger) { l.Info("e", "creds", credentials{user: "bob", password: canary}) },
			want: map[string]any{"creds.user": "bob", "creds.password": Redacted},
		},
		{
			name: "RedactsLogValuerNestedInStruct",
			log: func(l *slog.Logger) {
				l.Info("e", "h", holder{Label: "x", Creds: credentials{user: "bob", password: canary}})
			},
			want: map[string]any{"h.Label": "x", "h.Creds.user": "bob", "h.Creds.password": Redacted},
		},
		{
			name: "RedactsAttrPassedAsAValue",
			log: func(l *slog.Logger) {
				l.Info("e", "attrs", []slog.Attr{slog.String("token", canary), slog.Int("n", 1)},
					"list", []any{slog.String("password", canary)})
			},
			want: map[string]any{"attrs.token": Redacted, "attrs.n": json.Number("1"), "list.0.password": Redacted},
		},
		{
			name: "RedactsKeysInsideRawJSON",
			log: func(l *slog.Logger) {
				l.Info("e", "payload", json.RawMessage(`{"to":"15551234567","auth":{"access_token":"`+canary+`"}}`))
			},
			want: map[string]any{"payload.to": "15551234567", "payload.auth.access_token": Redacted},
		},

		// By value.
		{
			name: "ScrubsSecretFromMessage",
			log:  func(l *slog.Logger) { l.Info("POST https://graph.facebook.com/v23.0/me?access_token=" + testToken) },
			want: map[string]any{"event": "POST https://graph.facebook.com/v23.0/me?access_token=" + Redacted},
		},
		{
			name: "ScrubsSecretFromStringValue",
			log:  func(l *slog.Logger) { l.Info("e", "header", "Bearer "+testToken) },
			want: map[string]any{"header": "Bearer " + Redacted},
		},
		{
			name: "ScrubsSecretFromErrorText",
			log: func(l *slog.Logger) {
				err := fmt.Errorf("post message: %w", fmt.Errorf(`Post "https://graph.facebook.com/v23.0/1065/messages?access_token=%s": timeout`, testToken))
				l.Error("meta_api_error", "error", err)
			},
			want: map[string]any{"error": `post message: Post "https://graph.facebook.com/v23.0/1065/messages?access_token=` + Redacted + `": timeout`},
		},
		{
			name: "ScrubsBrokerPasswordFromDialError",
			log: func(l *slog.Logger) {
				l.Warn("broker_connection_lost", "err", errors.New("dial amqp://wadispatch:"+testPassword+"@rabbit:5672/: refused"))
			},
			want: map[string]any{"err": "dial amqp://wadispatch:" + Redacted + "@rabbit:5672/: refused"},
		},
		{
			name: "ScrubsErrorInsideMap",
			log: func(l *slog.Logger) {
				l.Info("e", "result", map[string]any{"err": errors.New("bad token " + testToken)})
			},
			want: map[string]any{"result.err": "bad token " + Redacted},
		},
		{
			name: "ScrubsStringer",
			log:  func(l *slog.Logger) { l.Info("e", "h", headerString(testToken)) },
			want: map[string]any{"h": "Authorization: Bearer " + Redacted},
		},
		{
			name: "ScrubsByteSlice",
			log:  func(l *slog.Logger) { l.Info("e", "body", []byte(`{"auth":"`+testToken+`"}`)) },
			want: map[string]any{"body": `{"auth":"` + Redacted + `"}`},
		},
		{
			name: "ScrubsSecretsInSlicesAndStructValues",
			log: func(l *slog.Logger) {
				l.Info("e", "args", []string{"-u", testPassword}, "cfg", sensitiveConfig{Name: testToken})
			},
			want: map[string]any{"args.1": Redacted, "cfg.Name": Redacted},
		},
		{
			name: "MasksUnregisteredPasswordInURL",
			log: func(l *slog.Logger) {
				u, _ := url.Parse("amqp://guest:" + canary + "@127.0.0.1:5672/")
				l.Info("broker_connected", "url", u)
			},
			want: map[string]any{"url": "amqp://guest:****@127.0.0.1:5672/"},
		},
		{
			name: "ScrubsSecretInKeys",
			log: func(l *slog.Logger) {
				l.WithGroup("g-"+testToken).Info("e", "k-"+testToken, "v", slog.Group("grp"+testPassword, "x", 1))
			},
			want: map[string]any{
				"g-" + Redacted + ".k-" + Redacted:         "v",
				"g-" + Redacted + ".grp" + Redacted + ".x": json.Number("1"),
			},
		},
		{
			name: "ScrubsSecretInWithAttrs",
			log:  func(l *slog.Logger) { l.With("url", "https://x/?t="+testToken).Info("e") },
			want: map[string]any{"url": "https://x/?t=" + Redacted},
		},
		{
			name: "ScrubsPanicReason",
			log:  func(l *slog.Logger) { l.Info("[ACTOR] Recovering", slog.Any("reason", "boom "+testToken)) },
			want: map[string]any{"reason": "boom " + Redacted},
		},

		// Failing safe.
		{
			name: "RedactsStringerThatPanics",
			log:  func(l *slog.Logger) { l.Info("e", "v", panicStringer(1)) },
			want: map[string]any{"v": Redacted},
		},
		{
			name: "RedactsErrorThatPanics",
			log:  func(l *slog.Logger) { l.Info("e", "err", error((*panicError)(nil))) },
			want: map[string]any{"err": Redacted},
		},
		{
			name: "RedactsValuesThatCannotBeWalked",
			log: func(l *slog.Logger) {
				l.Info("e", "ch", make(chan int), "fn", func() {}, "m", failingMarshaler{})
			},
			want: map[string]any{"ch": Redacted, "fn": Redacted, "m": Redacted},
		},
		{
			name: "RedactsBeyondMaximumDepthOfACycle",
			log: func(l *slog.Logger) {
				n := &node{Name: "loop"}
				n.Next = n
				l.Info("e", "n", n)
			},
			want: map[string]any{"n.Name": "loop", "n.Next.Next.Name": "loop"},
		},
		{
			name: "ReportsLogValuerPanicWithoutItsMessage",
			log:  func(l *slog.Logger) { l.Info("e", "v", panicLogValuer{}) },
			check: func(t *testing.T, line map[string]any) {
				v, _ := line["v"].(string)
				assert.True(t, strings.HasPrefix(v, "LogValue panicked"), v)
			},
		},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, c := newTestLogger(t, NewSecrets(testToken, testPassword))
			tc.log(l)
			line := c.line(t)
			for path, want := range tc.want {
				got, ok := lookup(line, path)
				if assert.True(t, ok, "no %q in line %v", path, line) {
					assert.Equal(t, want, got, "at %q", path)
				}
			}
			if tc.check != nil {
				tc.check(t, line)
			}
			raw := c.raw()
			assert.NotContains(t, raw, testToken)
			assert.NotContains(t, raw, testPassword)
			assert.NotContains(t, raw, canary)
		})
	}
}

func TestRedactionLeavesCallerValuesUnchanged(t *testing.T) {
	headers := map[string]string{"Authorization": "Bearer " + testToken, "Accept": "json"}
	nested := map[string]any{"inner": map[string]any{"password": testPassword}, "list": []string{testToken}}
	cfg := &sensitiveConfig{Name: testToken, AccessToken: testToken, Password: testPassword}
	list := []any{testToken, map[string]string{"token": "x"}, cfg}
	raw := json.RawMessage(`{"access_token":"` + testToken + `"}`)
	body := []byte("Bearer " + testToken)

	wantHeaders := map[string]string{"Authorization": "Bearer " + testToken, "Accept": "json"}
	wantNested := map[string]any{"inner": map[string]any{"password": testPassword}, "list": []string{testToken}}
	wantCfg := sensitiveConfig{Name: testToken, AccessToken: testToken, Password: testPassword}
	wantRaw := json.RawMessage(`{"access_token":"` + testToken + `"}`)
	wantBody := []byte("Bearer " + testToken)

	l, c := newTestLogger(t, NewSecrets(testToken, testPassword))
	l.With("headers", headers).Info("e", "nested", nested, "cfg", cfg, "list", list, "raw", raw, "body", body)
	require.NotContains(t, c.raw(), testToken)

	t.Run("MapsUnchanged", func(t *testing.T) {
		assert.Equal(t, wantHeaders, headers)
		assert.Equal(t, wantNested, nested)
	})
	t.Run("StructsUnchanged", func(t *testing.T) {
		assert.Equal(t, wantCfg, *cfg)
	})
	t.Run("SlicesUnchanged", func(t *testing.T) {
		assert.Equal(t, testToken, list[0])
		assert.Equal(t, map[string]string{"token": "x"}, list[1])
		assert.Same(t, cfg, list[2])
		assert.Equal(t, wantRaw, raw)
		assert.Equal(t, wantBody, body)
	})
}

func TestRedactionOfLateSecrets(t *testing.T) {
	t.Run("ScrubsWithAttrsOfASecretAddedAfterWith", func(t *testing.T) {
		secrets := NewSecrets()
		l, c := newTestLogger(t, secrets)
		tenant := l.With("header", "Bearer EAAGlateToken").WithGroup("send").With("note", "uses EAAGlateToken")
		secrets.Add("EAAGlateToken")
		tenant.Info("message_delivered")

		line := c.line(t)
		header, _ := lookup(line, "header")
		note, _ := lookup(line, "send.note")
		assert.Equal(t, "Bearer "+Redacted, header)
		assert.Equal(t, "uses "+Redacted, note)
		assert.NotContains(t, c.raw(), "EAAGlateToken")
	})

	t.Run("KeepsWithAttrsWhenNoSecretWasAdded", func(t *testing.T) {
		secrets := NewSecrets("EAAGsome")
		l, c := newTestLogger(t, secrets)
		tenant := l.With("tenantId", "acme")
		secrets.Add("EAAGsome") // already held: no new generation
		tenant.Info("a")
		tenant.Info("b")
		for _, line := range c.lines(t) {
			assert.Equal(t, "acme", line["tenantId"])
		}
	})
}

func TestIsSensitiveKey(t *testing.T) {
	sensitive := []string{
		"token", "Token", "TOKEN", "accessToken", "access_token", "ACCESS_TOKEN", "systemUserAccessToken",
		"password", "PASSWORD", "brokerPassword", "secret", "clientSecret", "CLIENT_SECRET",
		"authorization", "Authorization", "X-Authorization", "proxy-authorization",
		"to\u212aen", "\u017fecret", "pa\u017f\u017fword", // Kelvin sign, long s
	}
	plain := []string{
		"", "tenantId", "internalId", "wamid", "duration", "attempts", "auth", "tok", "pass",
		"passwd", "secre", "authorize", "rateLimit", "available", "key", "tökén",
	}
	for _, key := range sensitive {
		t.Run("Sensitive_"+key, func(t *testing.T) { assert.True(t, IsSensitiveKey(key)) })
	}
	for _, key := range plain {
		t.Run("Plain_"+key, func(t *testing.T) { assert.False(t, IsSensitiveKey(key)) })
	}
	t.Run("EveryContractWordIsSensitive", func(t *testing.T) {
		for _, w := range []string{"token", "accesstoken", "systemuseraccesstoken", "password", "secret", "authorization"} {
			assert.True(t, IsSensitiveKey(w), w)
			assert.True(t, IsSensitiveKey("x_"+strings.ToUpper(w)+"_y"), w)
		}
	})
}

package metrics

import "time"

// SetScrapeTimeout shortens the tenant source's timeout for tests.
func (m *Metrics) SetScrapeTimeout(d time.Duration) { m.state.setTimeout(d) }

package broker

// PendingPublishes is how many publishes of b are registered (their delivery
// tag taken, written or about to be) and not yet resolved. A publish
// registers while it holds the publisher's turn and writes before giving the
// turn up, so once this counts it, any later publish is written after it.
func PendingPublishes(b *Broker) int {
	g := b.pub.gen
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pending)
}

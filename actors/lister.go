package actors

import (
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/wadispatch/wadispatch/messages"
)

// lister gathers one listing: it asks each running tenant actor for its
// info and answers replyTo with every tenant, sorted by ID, once all have
// answered or the timeout has passed. One short-lived actor per listing
// rather than one future per tenant: a future is an entry in the
// process registry, whose map keeps its largest size, so a listing of
// 100,000 running tenants would leave room for 100,000 more entries behind.
type lister struct {
	infos   []messages.TenantInfo // the tenants without an actor, then the answers
	asks    map[string]*actor.PID // tenant ID → actor, until it answers
	replyTo *actor.PID
	timeout time.Duration
	timer   *time.Timer // stopped on answering, so no timeout reaches a stopped lister
}

// listTimedOut ends a listing that still waits for answers.
type listTimedOut struct{}

func newListerProps(infos []messages.TenantInfo, asks map[string]*actor.PID, replyTo *actor.PID, timeout time.Duration) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &lister{infos: infos, asks: asks, replyTo: replyTo, timeout: timeout}
	})
}

func (l *lister) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		if len(l.asks) == 0 {
			l.answer(ctx)
			return
		}
		for id, pid := range l.asks {
			ctx.Request(pid, &messages.GetTenant{TenantID: id})
		}
		self, root := ctx.Self(), ctx.ActorSystem().Root
		l.timer = time.AfterFunc(l.timeout, func() { root.Send(self, listTimedOut{}) })
	case *messages.TenantInfo:
		if _, ok := l.asks[msg.ID]; !ok {
			return
		}
		delete(l.asks, msg.ID)
		l.infos = append(l.infos, *msg)
		if len(l.asks) == 0 {
			l.answer(ctx)
		}
	case listTimedOut:
		for id := range l.asks {
			l.infos = append(l.infos, messages.TenantInfo{ID: id, Active: true, LastError: "no answer from tenant actor"})
		}
		l.asks = nil
		l.answer(ctx)
	}
}

func (l *lister) answer(ctx actor.Context) {
	if l.replyTo == nil {
		return
	}
	slices.SortFunc(l.infos, func(a, b messages.TenantInfo) int { return strings.Compare(a.ID, b.ID) })
	ctx.Send(l.replyTo, &messages.TenantList{Tenants: l.infos})
	l.replyTo = nil
	if l.timer != nil {
		l.timer.Stop()
	}
	ctx.Stop(ctx.Self())
}

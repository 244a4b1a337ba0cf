package identity

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
)

// RenewAt is when the current certificate should be replaced: after 2/3 of its lifetime,
// which leaves a third of it to ride out a collector outage while retrying.
func (id *Identity) RenewAt() time.Time {
	c := id.Certificate()
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(life * 2 / 3)
}

// RenewalDue reports whether RenewAt has passed.
func (id *Identity) RenewalDue() bool { return !id.now().Before(id.RenewAt()) }

// Renew obtains a certificate for a fresh key over client (which must authenticate with the
// current certificate), writes it with one atomic rename, then swaps it in for new
// connections. On any error the old certificate stays in use.
func (id *Identity) Renew(ctx context.Context, client wardv1.AgentServiceClient) error {
	host := id.Certificate().Subject.CommonName
	key, csr, err := newKeyAndCSR(host)
	if err != nil {
		return fmt.Errorf("identity: renew: %w", err)
	}
	resp, err := client.RenewCertificate(ctx, &wardv1.RenewCertificateRequest{CsrDer: csr})
	if err != nil {
		return fmt.Errorf("identity: renew: %w", err)
	}
	cert, err := parseIssued(resp.GetCertificateDer(), key)
	if err != nil {
		return fmt.Errorf("identity: renew: %w", err)
	}
	if err := id.checkClientCert(cert.Leaf); err != nil {
		return fmt.Errorf("identity: renew: issued %w", err)
	}
	cp, err := clientPEM(cert.Certificate[0], key)
	if err != nil {
		return fmt.Errorf("identity: renew: %w", err)
	}
	if err := writeFileAtomic(id.dir, clientFile, cp); err != nil {
		return fmt.Errorf("identity: renew: %w", err)
	}
	id.swap(cert)
	id.log.Info("client certificate renewed", "agent_id", id.agentID, "not_after", cert.Leaf.NotAfter)
	return nil
}

func (id *Identity) swap(c *tls.Certificate) {
	id.mu.Lock()
	defer id.mu.Unlock()
	id.cert = c
}

// RunRenewal renews the certificate whenever RenewalDue, retrying failures with capped
// exponential backoff, until ctx ends. It returns ctx.Err().
func (id *Identity) RunRenewal(ctx context.Context, client wardv1.AgentServiceClient) error {
	const minRetry, maxRetry = 30 * time.Second, 30 * time.Minute
	retry := minRetry
	for {
		wait := id.RenewAt().Sub(id.now())
		if wait > 0 {
			// Wake at least hourly: timers run on the monotonic clock, which stops while a
			// laptop is suspended, so one long sleep could overshoot the expiry.
			if err := sleep(ctx, min(wait, time.Hour)); err != nil {
				return err
			}
			continue // re-check: the clock may have jumped
		}
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := id.Renew(cctx, client)
		cancel()
		if err == nil {
			retry = minRetry
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if status.Code(err) == codes.Unauthenticated {
			id.log.Error("certificate renewal refused: the collector no longer accepts this agent; re-enrol", "agent_id", id.agentID, "err", err)
		} else {
			id.log.Warn("certificate renewal failed; will retry", "agent_id", id.agentID, "not_after", id.Certificate().NotAfter, "retry_in", retry, "err", err)
		}
		if err := sleep(ctx, retry/2+rand.N(retry/2)); err != nil {
			return err
		}
		retry = min(retry*2, maxRetry)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

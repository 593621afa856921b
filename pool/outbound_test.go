package pool

import (
	"context"
	"net/netip"
	"testing"

	"github.com/caddy-refractor/refractor/internal/testmirror"
)

func TestIsPublic(t *testing.T) {
	for _, c := range []struct {
		addr   string
		public bool
	}{
		{"1.1.1.1", true},
		{"2a01:4f8::1", true},
		{"127.0.0.1", false},
		{"::1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"100.64.0.1", false},      // CGNAT
		{"169.254.169.254", false}, // link-local: cloud metadata
		{"fe80::1", false},
		{"fd00::1", false}, // unique local
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"::", false},
		{"::ffff:127.0.0.1", false}, // IPv4-mapped
		{"::ffff:192.168.0.1", false},
		{"::ffff:8.8.8.8", true},
		{"224.0.0.1", false},
		{"192.0.0.8", false},
		{"198.18.0.1", false},
		{"240.0.0.1", false},
		{"64:ff9b::7f00:1", false},  // NAT64 of 127.0.0.1
		{"64:ff9b::808:808", true},  // NAT64 of 8.8.8.8
		{"2002:c0a8:101::1", false}, // 6to4 of 192.168.1.1
		{"2002:808:808::1", true},
		{"::7f00:1", false}, // IPv4-compatible 127.0.0.1
		{"::a00:1", false},  // IPv4-compatible 10.0.0.1
	} {
		if got := IsPublic(netip.MustParseAddr(c.addr)); got != c.public {
			t.Errorf("IsPublic(%s) = %v, want %v", c.addr, got, c.public)
		}
	}
}

// A mirror named by a list fetched from a public address may not be
// dialled at a non-public one: its requests fail before any byte is sent,
// and the client gets the file from a mirror of the local configuration.
func TestRemoteMirrorMayNotReachTheLAN(t *testing.T) {
	files := mirrorFiles(64 << 10)
	lan, local := testmirror.New(t, files), testmirror.New(t, files)
	cands := []Candidate{{URL: lan.Base(), Remote: true}, {URL: local.Base()}}
	p := startPool(t, Config{Workers: 2, Resign: -1, Provider: ProviderFunc(func(context.Context) ([]Candidate, error) {
		return cands, nil
	})})
	waitPoolSize(t, p, 2)
	setSamples(t, p, lan.Base(), 50<<20) // asked first
	for range 3 {
		rec, err := serve(t, p, nil, pkgName)
		wantFile(t, rec, err, local, files[pkgName])
	}
	if lan.Requests() != 0 {
		t.Fatalf("the LAN mirror named by a public list got %d requests", lan.Requests())
	}
}

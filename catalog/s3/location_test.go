package s3

import (
	"errors"
	"testing"
)

func TestParseLocation(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Location
	}{
		{"s3:https://s3.example.com/bucket", Location{Host: "s3.example.com", Bucket: "bucket"}},
		{"s3:https://s3.example.com:9000/bucket/a/b/", Location{Host: "s3.example.com:9000", Bucket: "bucket", Prefix: "a/b"}},
		{"s3:http://127.0.0.1:7070/thinback-test/p", Location{Insecure: true, Host: "127.0.0.1:7070", Bucket: "thinback-test", Prefix: "p"}},
		{"s3:s3.eu-central-1.amazonaws.com/my.bucket/backups", Location{Host: "s3.eu-central-1.amazonaws.com", Bucket: "my.bucket", Prefix: "backups"}},
		{"s3:http://[::1]:9000/bkt", Location{Insecure: true, Host: "[::1]:9000", Bucket: "bkt"}},
		{"s3:https://[2001:db8::1]/bkt/x", Location{Host: "[2001:db8::1]", Bucket: "bkt", Prefix: "x"}},
	} {
		got, err := ParseLocation(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: %+v, want %+v", c.in, got, c.want)
		}
		again, err := ParseLocation(got.String())
		if err != nil || again != got {
			t.Errorf("%s: String %q parses to %+v, %v", c.in, got.String(), again, err)
		}
	}
	for _, bad := range []string{
		"", "/backup", "s3:", "s3:https://", "s3:https://host", "s3:https://host/", "s3://host/bucket",
		"s3:ftp://host/bucket", "s3:https://user:pw@host/bucket", "s3:https://host:0/bucket",
		"s3:https://host:99999/bucket", "s3:https://host:/bucket", "s3:https://:80/bucket", "s3:https://host/ab",
		"s3:https://host/Bucket!/x", "s3:https://host/bucket/a/../b", "s3:https://host/bucket/a//b",
		"s3:https://host/bucket?x=1", "s3:https://host/bucket#f", "s3:https://ho st/bucket", "s3:https://[::1/bucket",
		"s3:https://[nothost]/bucket", "s3:https://host/bucket/a\x00b", "s3:https://host/a..b", "s3:https://host/bucket/\xff",
	} {
		if _, err := ParseLocation(bad); !errors.Is(err, ErrLocation) {
			t.Errorf("%q: %v, want ErrLocation", bad, err)
		}
	}
	if !IsLocation("s3:x") || IsLocation("/srv/backup") {
		t.Error("IsLocation")
	}
}

func FuzzParseLocation(f *testing.F) {
	for _, s := range []string{"s3:https://h/b", "s3:http://127.0.0.1:1/bkt/p/q", "s3:[::1]:80/bkt", "s3:https://h/b/../c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		loc, err := ParseLocation(s)
		if err != nil {
			if !errors.Is(err, ErrLocation) {
				t.Fatalf("%q: error %v is not ErrLocation", s, err)
			}
			return
		}
		again, err := ParseLocation(loc.String())
		if err != nil || again != loc {
			t.Fatalf("%q: %+v prints as %q, which parses to %+v, %v", s, loc, loc.String(), again, err)
		}
		if loc.Prefix != "" {
			if err := validName(loc.Prefix); err != nil {
				t.Fatalf("%q: prefix %q is not a valid name: %v", s, loc.Prefix, err)
			}
		}
	})
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "volumes/vg0+vm1/1-x.tbk", "../a", "a//b", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if validName(name) != nil {
			return
		}
		s := &Store{loc: Location{Prefix: "pre"}}
		back, ok := s.name(s.key(name))
		if !ok || back != name {
			t.Fatalf("%q: key %q maps back to %q, %v", name, s.key(name), back, ok)
		}
	})
}

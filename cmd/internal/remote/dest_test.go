package remote

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDest(t *testing.T) {
	good := []struct {
		in   string
		want Dest
	}{
		{"ssh://h/vg0/vm1", Dest{Host: "h", Path: "vg0/vm1"}},
		{"ssh://h/dev/vg0/vm1", Dest{Host: "h", Path: "/dev/vg0/vm1"}},
		{"ssh://h//dev/vg0/vm1", Dest{Host: "h", Path: "/dev/vg0/vm1"}},
		{"ssh://h//vg0/vm1", Dest{Host: "h", Path: "/vg0/vm1"}},
		{"ssh://h/srv/backup/store", Dest{Host: "h", Path: "/srv/backup/store"}},
		{"ssh://h/backup", Dest{Host: "h", Path: "/backup"}},
		{"ssh://root@h:2222/vg0/vm1", Dest{User: "root", Host: "h", Port: 2222, Path: "vg0/vm1"}},
		{"ssh://[::1]/vg0/vm1", Dest{Host: "::1", Path: "vg0/vm1"}},
		{"ssh://me@[fe80::1%eth0]:22/dev/sdb", Dest{User: "me", Host: "fe80::1%eth0", Port: 22, Path: "/dev/sdb"}},
		{"host2:/dev/vg0/vm1", Dest{Host: "host2", Path: "/dev/vg0/vm1"}},
		{"root@host2.example.org:/dev/mapper/vg0-vm1", Dest{User: "root", Host: "host2.example.org", Path: "/dev/mapper/vg0-vm1"}},
		{"[::1]:/dev/vg0/vm1", Dest{Host: "::1", Path: "/dev/vg0/vm1"}},
		{"u@[2001:db8::2]:/srv/img", Dest{User: "u", Host: "2001:db8::2", Path: "/srv/img"}},
		{"10.0.0.2:/tmp/x:y", Dest{Host: "10.0.0.2", Path: "/tmp/x:y"}},
		// Local: no host.
		{"vg0/vm1", Dest{Path: "vg0/vm1"}},
		{"/dev/vg0/vm1", Dest{Path: "/dev/vg0/vm1"}},
		{"./a:b", Dest{Path: "./a:b"}},
		{"./h:/x", Dest{Path: "./h:/x"}},
		{"/tmp/a:/b", Dest{Path: "/tmp/a:/b"}},
		{"img:relative", Dest{Path: "img:relative"}},
	}
	for _, c := range good {
		got, err := ParseDest(c.in)
		if err != nil {
			t.Errorf("ParseDest(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseDest(%q) = %+v, want %+v", c.in, got, c.want)
		}
		if got.Remote() != (c.want.Host != "") {
			t.Errorf("ParseDest(%q).Remote() = %v", c.in, got.Remote())
		}
		back, err := ParseDest(got.String())
		if err != nil || back != got {
			t.Errorf("ParseDest(%q).String() = %q, which parses as %+v, %v", c.in, got.String(), back, err)
		}
	}
	bad := []struct{ in, want string }{
		{"", "empty"},
		{"ssh://h", "no path"},
		{"ssh://h/", "no path"},
		{"ssh:///vg0/vm1", "no host"},
		{"ssh://@h/vg0/vm1", "empty user"},
		{"ssh://h:/vg0/vm1", "no port"},
		{"ssh://h:0/vg0/vm1", "port \"0\""},
		{"ssh://h:65536/vg0/vm1", "1 to 65535"},
		{"ssh://h:ssh/vg0/vm1", "not a number"},
		{"ssh://::1/vg0/vm1", "brackets"},
		{"ssh://[::1/vg0/vm1", "unclosed"},
		{"ssh://[::1]x/vg0/vm1", "after the host"},
		{"ssh://-oProxyCommand=x/vg0/vm1", "option"},
		{"-oProxyCommand=x:/dev/sda", "option"},
		{"ssh://-l@h/vg0/vm1", "option"},
		{"ssh://h/vg0/vm1\n", "control character"},
		{"h:/dev/x\r", "control character"},
		{"ssh://a b/vg0/vm1", "space"},
		{":/dev/x", "no host"},
		{"::1:/dev/x", "brackets"},
		{"[::1:/dev/x", "brackets"},
		{"[]:/dev/x", "IPv6"},
	}
	for _, c := range bad {
		d, err := ParseDest(c.in)
		if err == nil {
			t.Errorf("ParseDest(%q) = %+v, want an error", c.in, d)
			continue
		}
		if !errors.Is(err, ErrDest) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseDest(%q): %v, want ErrDest saying %q", c.in, err, c.want)
		}
	}
}

func TestDestString(t *testing.T) {
	for _, c := range []struct {
		d    Dest
		want string
	}{
		{Dest{Path: "vg0/vm1"}, "vg0/vm1"},
		{Dest{Host: "h", Path: "/dev/vg0/vm1"}, "h:/dev/vg0/vm1"},
		{Dest{User: "u", Host: "::1", Path: "/dev/vg0/vm1"}, "u@[::1]:/dev/vg0/vm1"},
		{Dest{Host: "h", Path: "vg0/vm1"}, "ssh://h/vg0/vm1"},
		{Dest{Host: "h", Port: 2222, Path: "/dev/vg0/vm1"}, "ssh://h:2222/dev/vg0/vm1"},
		{Dest{Host: "h", Port: 2222, Path: "/vg0/vm1"}, "ssh://h:2222//vg0/vm1"},
	} {
		if got := c.d.String(); got != c.want {
			t.Errorf("%+v.String() = %q, want %q", c.d, got, c.want)
		}
	}
}

module boxlite.dev/net

go 1.25.0

require (
	github.com/miekg/dns v1.1.73
	golang.org/x/crypto v0.54.0
	gvisor.dev/gvisor v0.0.0-20240916094835-a174eb65023f
)

require (
	github.com/google/btree v1.1.2 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/time v0.5.0 // indirect
)

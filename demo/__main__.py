"""`python -m demo` runs the demo (what `make demo` calls)."""

from demo.run import main

raise SystemExit(main())

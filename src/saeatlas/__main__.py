from saeatlas.cli import main

raise SystemExit(main())

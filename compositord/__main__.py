from compositord.cli import main

raise SystemExit(main())

from notefly.cli import main

raise SystemExit(main())

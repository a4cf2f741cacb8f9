from services.plugin.app import main

raise SystemExit(main())

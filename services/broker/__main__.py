from services.broker.app import main

raise SystemExit(main())

from services.generator.app import main

raise SystemExit(main())

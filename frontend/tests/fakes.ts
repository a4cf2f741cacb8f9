import { DataSourceInstanceSettings, PluginType } from '@grafana/data';

import { DataSource } from '../src/datasource';
import { StreamOptions } from '../src/types';

/** Instance settings as Grafana hands them to the datasource constructor. */
export function instanceSettings(jsonData: StreamOptions = {}): DataSourceInstanceSettings<StreamOptions> {
  return {
    id: 1,
    uid: 'zs-uid',
    type: 'zmqstream-stream-datasource',
    name: 'zmqstream',
    access: 'proxy',
    readOnly: false,
    jsonData,
    meta: {
      id: 'zmqstream-stream-datasource',
      name: 'zmqstream',
      type: PluginType.datasource,
      info: {
        author: { name: 'zmqstream' },
        description: '',
        links: [],
        logos: { small: '', large: '' },
        screenshots: [],
        updated: '',
        version: '0.1.0',
      },
      module: '',
      baseUrl: '',
    },
  };
}

export function datasource(jsonData: StreamOptions = {}): DataSource {
  return new DataSource(instanceSettings(jsonData));
}
